//! Renders a 2-D sample as an 8-bit grayscale PNG.

/// Encodes `values` (row-major `height x width`) mapping `[lo, hi]` linearly onto 0..255.
pub fn render_gray(values: &[f32], height: usize, width: usize, lo: f32, hi: f32) -> Result<Vec<u8>, String> {
    if values.len() != height * width {
        return Err(format!(
            "{} values cannot fill a {height}x{width} image",
            values.len()
        ));
    }
    let span = if hi > lo { hi - lo } else { 1.0 };
    let pixels: Vec<u8> = values
        .iter()
        .map(|&v| (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let mut out = Vec::new();
    {
        let mut encoder = ::png::Encoder::new(&mut out, width as u32, height as u32);
        encoder.set_color(::png::ColorType::Grayscale);
        encoder.set_depth(::png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&pixels).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}
