use std::sync::Arc;

use anyhow::{Result, anyhow};
use wgpu::util::DeviceExt;

use super::Gpu;

/// An f32 tensor in a GPU storage buffer (row-major, contiguous).
#[derive(Clone)]
pub struct Tensor {
    pub buf: Arc<wgpu::Buffer>,
    pub shape: Vec<usize>,
}

const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// Bytes of the buffer behind an `n`-float tensor: rounded up to whole 16-byte groups, so a
/// texture mirror (`TexMirror`) can copy its last partial texel from it.
fn buffer_size(n: usize) -> u64 {
    (n.max(1).next_multiple_of(4) * 4) as u64
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// A zero-filled tensor from the device's buffer pool: a buffer of the same size that no
    /// tensor holds any more is cleared and reused, otherwise a new one is created. Zero-element
    /// tensors still get a buffer so they can be bound.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let size = buffer_size(n);
        let mut pool = gpu.pool.lock().expect("buffer pool poisoned");
        let list = pool.entry(size).or_default();
        let buf = match list.iter().find(|b| Arc::strong_count(b) == 1) {
            Some(b) => {
                let b = b.clone();
                let mut enc = gpu.device.create_command_encoder(&Default::default());
                enc.clear_buffer(&b, 0, None);
                gpu.queue.submit([enc.finish()]);
                b
            }
            None => {
                let b = Arc::new(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: USAGE,
                    mapped_at_creation: false,
                }));
                list.push(b.clone());
                b
            }
        };
        Tensor { buf, shape: shape.to_vec() }
    }

    pub fn from_slice(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(n, data.len(), "tensor data length does not match shape {shape:?}");
        let mut contents = bytemuck::cast_slice::<f32, u8>(data).to_vec();
        contents.resize(buffer_size(n) as usize, 0);
        let buf = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &contents,
            usage: USAGE,
        });
        Tensor { buf: Arc::new(buf), shape: shape.to_vec() }
    }

    /// Overwrites the contents (queued; ordered before later submissions).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) {
        assert_eq!(data.len(), self.numel(), "write: length mismatch");
        if !data.is_empty() {
            gpu.queue.write_buffer(&self.buf, 0, bytemuck::cast_slice(data));
        }
    }

    /// Copies the tensor back to the host; waits for the GPU.
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let n = self.numel();
        if n == 0 {
            return Ok(Vec::new());
        }
        read_words(gpu, &self.buf, n)
    }
}

/// The first `n` 32-bit words of a storage buffer, copied to the host; waits for the GPU.
pub(crate) fn read_words<T: bytemuck::Pod>(gpu: &Gpu, buf: &wgpu::Buffer, n: usize) -> Result<Vec<T>> {
    assert_eq!(std::mem::size_of::<T>(), 4, "read_words reads 32-bit words");
    let size = (n * 4) as u64;
    let reused = gpu.staging.lock().expect("staging pool poisoned").get_mut(&size).and_then(Vec::pop);
    let staging = reused.unwrap_or_else(|| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    });
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
    gpu.queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.wait()?;
    rx.recv()
        .map_err(|e| anyhow!("readback channel: {e}"))?
        .map_err(|e| anyhow!("readback map failed: {e}"))?;
    let out = {
        let view = staging.slice(..).get_mapped_range().map_err(|e| anyhow!("readback view: {e:?}"))?;
        bytemuck::pod_collect_to_vec::<u8, T>(&view)
    };
    staging.unmap();
    gpu.staging.lock().expect("staging pool poisoned").entry(size).or_default().push(staging);
    Ok(out)
}
