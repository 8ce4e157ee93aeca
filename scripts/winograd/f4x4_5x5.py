import sympy as sp
from fractions import Fraction as Fr
m, r = 4, 5
pts = [0, 1, -1, 2, -2, sp.Rational(1,2), sp.Rational(-1,2)]
a = m + r - 1
def V(n):
    return sp.Matrix([[sp.Rational(p)**j for j in range(n)] for p in pts] + [[0]*(n-1)+[1]])
Vm, Vr, Va = V(m), V(r), V(a)
C = Va.inv()
AT = Vm.T
G = Vr
BT = C.T
# scale rows of BT to integers, move into G
for i in range(a):
    dens = [sp.fraction(x)[1] for x in BT.row(i)]
    l = sp.ilcm(*dens)
    nums = [x*l for x in BT.row(i)]
    g = sp.igcd(*[int(n) for n in nums if n != 0])
    s = sp.Rational(l, g)
    BT[i, :] = BT.row(i) * s
    G[i, :] = G.row(i) / s
sp.pprint(AT); sp.pprint(G); sp.pprint(BT)
print(AT.tolist()); print(G.tolist()); print(BT.tolist())
# verify: correlation of d (8) with g (5) gives y (4)
d = sp.symbols('d0:8'); gg = sp.symbols('g0:5')
dv = sp.Matrix(d); gv = sp.Matrix(gg)
y = AT * ((G*gv).multiply_elementwise(BT*dv))
for i in range(4):
    assert sp.expand(y[i] - sum(gg[k]*d[i+k] for k in range(5))) == 0
print("ok")
