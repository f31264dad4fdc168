//! Which burn device runs the models: the CPU (burn's `flex` backend, the default and what the tests use) or a
//! GPU through `wgpu` (Vulkan, Metal or DX12; the full-size configuration's target).

use burn::tensor::Device;

/// A `--device` choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// CPU, burn `flex`.
    #[default]
    Cpu,
    /// The default wgpu adapter (a discrete GPU when there is one).
    Wgpu,
}

impl DeviceKind {
    /// The burn device.
    pub fn device(self) -> Device {
        match self {
            DeviceKind::Cpu => Device::flex(),
            DeviceKind::Wgpu => Device::wgpu(Default::default()),
        }
    }
}
