use candle_core::{Device, Tensor, Var};
use std::time::Instant;
fn main() {
    let which: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let (c, hw, o, xgrad) = if which == 1 {
        (1, 28, 32, false)
    } else {
        (32, 14, 64, true)
    };
    let x =
        Var::from_tensor(&Tensor::randn(0f32, 1., (32, c, hw, hw), &Device::Cpu).unwrap()).unwrap();
    let w =
        Var::from_tensor(&Tensor::randn(0f32, 0.1, (o, c, 5, 5), &Device::Cpu).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::randn(0f32, 0.1, o, &Device::Cpu).unwrap()).unwrap();
    let xin = if xgrad {
        x.as_tensor().clone()
    } else {
        x.as_tensor().detach()
    };
    let r = Tensor::randn(0f32, 1., (32, o, hw, hw), &Device::Cpu).unwrap();
    let mut tf = vec![];
    let mut tl = vec![];
    let mut tb = vec![];
    for _ in 0..200 {
        let t0 = Instant::now();
        let y = fedpace_kernels::conv2d(&xin, &w, Some(&b), 2, 1).unwrap();
        let t1 = Instant::now();
        let l = (y * &r).unwrap().sum_all().unwrap();
        let t2 = Instant::now();
        let _g = l.backward().unwrap();
        let t3 = Instant::now();
        tf.push((t1 - t0).as_secs_f64());
        tl.push((t2 - t1).as_secs_f64());
        tb.push((t3 - t2).as_secs_f64());
    }
    for v in [&mut tf, &mut tl, &mut tb] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "fwd {:.2} ms, loss {:.2} ms, backward {:.2} ms",
        tf[100] * 1e3,
        tl[100] * 1e3,
        tb[100] * 1e3
    );
}
