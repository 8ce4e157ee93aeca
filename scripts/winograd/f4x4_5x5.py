"""Derives the Winograd F(4x4, 5x5) matrices of crates/kernels/src/winograd4.rs.

Toom-Cook at the points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity, transposed for
correlation: A^T = V_m^T, G = V_r, B^T = (V_a^-1)^T, each row of B^T scaled to small
integers with the inverse scale moved into G. Exact rationals (sympy); the 1-D identity
y_i = sum_k g_k d_{i+k} is checked symbolically. Run: python3 f4x4_5x5.py (needs sympy).
"""
import sympy as sp

m, r = 4, 5
pts = [0, 1, -1, 2, -2, sp.Rational(1, 2), sp.Rational(-1, 2)]
a = m + r - 1


def vandermonde(n):
    rows = [[sp.Rational(p) ** j for j in range(n)] for p in pts]
    return sp.Matrix(rows + [[0] * (n - 1) + [1]])


Vm, Vr, Va = vandermonde(m), vandermonde(r), vandermonde(a)
AT = Vm.T
G = Vr
BT = Va.inv().T
for i in range(a):
    dens = [sp.fraction(x)[1] for x in BT.row(i)]
    lcm = sp.ilcm(*dens)
    nums = [int(x * lcm) for x in BT.row(i) if x != 0]
    s = sp.Rational(lcm, sp.igcd(*nums))
    BT[i, :] = BT.row(i) * s
    G[i, :] = G.row(i) / s
print("A^T =", AT.tolist())
print("G =", G.tolist())
print("B^T =", BT.tolist())
d = sp.symbols("d0:8")
g = sp.symbols("g0:5")
y = AT * ((G * sp.Matrix(g)).multiply_elementwise(BT * sp.Matrix(d)))
for i in range(m):
    assert sp.expand(y[i] - sum(g[k] * d[i + k] for k in range(r))) == 0
print("identity checked")
