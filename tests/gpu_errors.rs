//! GPU errors are errors: a validation error or out-of-memory reported by the driver becomes
//! an `Err` with one line (and the binary's one `maskaq: error:` line, exit 1), never a process
//! exit inside a callback.

mod common;

#[test]
fn a_buffer_over_the_adapter_limit_is_a_one_line_error() {
    let gpu = common::gpu();
    assert!(gpu.check().is_ok());
    let too_big = gpu.limits.max_buffer_size + 4096;
    let _buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("too big"),
        size: too_big,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let err = gpu.wait().expect_err("the driver's error must surface at the next wait");
    let text = format!("{err:#}");
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    assert!(text.contains("GPU"), "{text}");
    // The first error is kept: later checks report it too.
    assert!(gpu.check().is_err());
}

#[test]
fn buffer_size_check_names_the_flag_before_allocating() {
    let gpu = common::gpu();
    let err = gpu.check_buffer_size(u64::MAX, "--batch 99").unwrap_err().to_string();
    assert!(err.contains("--batch 99") && err.contains("allows"), "{err}");
    assert!(gpu.check_buffer_size(1024, "--batch 1").is_ok());
}
