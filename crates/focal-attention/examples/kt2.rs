use burn::tensor::{Distribution, Tensor};
type B = burn::backend::NdArray<f32>;
fn main() {
    let device = Default::default();
    let n = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<B, 4>::random([1, 8, 512, 64], n, &device);
    let t = std::time::Instant::now();
    let q = Tensor::<B, 4>::from_data(q.into_data(), &device);
    println!("first {:?}", t.elapsed());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let d = q.clone().into_data();
        let t1 = t.elapsed();
        let c = d.convert::<f32>();
        let t2 = t.elapsed();
        let v = c.into_vec::<f32>().unwrap();
        let t3 = t.elapsed();
        let back =
            Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(v, [1, 8, 512, 64]), &device);
        let t4 = t.elapsed();
        let _ = back.into_data();
        println!("{t1:?} {t2:?} {t3:?} {t4:?} {:?}", t.elapsed());
    }
}
