//! Helpers shared by the parity tests: reading the fixtures the `tests/fixtures/make_*.py` scripts write and
//! comparing against them. Each test binary uses a subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::store::{ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;

/// A float array from a fixture file: values and shape.
pub struct Array {
    pub values: Vec<f32>,
    pub shape: Vec<usize>,
}

impl Array {
    /// The array as a tensor on the CPU backend.
    pub fn tensor<const D: usize>(&self) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.values.clone(), self.shape.clone()), &Device::flex())
    }

    /// The `i`-th slice along axis 0.
    pub fn index(&self, i: usize) -> Array {
        let len: usize = self.shape[1..].iter().product();
        Array { values: self.values[i * len..(i + 1) * len].to_vec(), shape: self.shape[1..].to_vec() }
    }
}

/// The CPU backend the parity tests run on.
pub fn device() -> Device {
    Device::flex()
}

/// A fixture folder, `tests/fixtures/NAME`, as its `make_NAME.py` script writes it.
pub struct Fixtures(PathBuf);

impl Fixtures {
    pub fn new(name: &str) -> Self {
        Self(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name))
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    pub fn arrays(&self, file: &str) -> BTreeMap<String, Array> {
        read_arrays(&self.path(file))
    }

    pub fn json<T: for<'de> Deserialize<'de>>(&self, file: &str) -> T {
        read_json(&self.path(file))
    }
}

/// Every tensor of a safetensors fixture, as f32.
pub fn read_arrays(path: &Path) -> BTreeMap<String, Array> {
    let mut store = SafetensorsStore::from_file(path);
    store
        .get_all_tensors()
        .unwrap()
        .iter()
        .map(|(k, t)| {
            let data = bridge::to_data(t).unwrap();
            let shape = data.shape().to_vec();
            (k.clone(), Array { values: data.try_into_vec_as::<f32>().unwrap(), shape })
        })
        .collect()
}

/// A JSON fixture.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A tensor's values as f32.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// Max abs difference, after checking the shapes agree.
pub fn max_abs_err<const D: usize>(got: Tensor<D>, want: &Array) -> f32 {
    assert_eq!(got.dims().as_slice(), want.shape.as_slice(), "shape");
    values(got).iter().zip(&want.values).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// ||got - want|| / ||want||, after checking the shapes agree.
pub fn relative_error<const D: usize>(got: Tensor<D>, want: &Array) -> f64 {
    assert_eq!(got.dims().as_slice(), want.shape.as_slice(), "shape");
    let got = values(got);
    let diff: f64 = got.iter().zip(&want.values).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let norm: f64 = want.values.iter().map(|b| f64::from(*b).powi(2)).sum();
    (diff / norm).sqrt()
}
