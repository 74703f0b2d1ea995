//! PNG uploads for predictions: decoded to one grayscale sample of pixel values 0-255.
//!
//! Colour images become gray with the ITU-R 601 luma weights, rounded as Pillow's `convert("L")`
//! does, so a client preparing the same image in Python gets the same numbers. The size must equal
//! the model's 2-D input shape: resizing silently would change what the model sees.

use std::io::Cursor;

use png::{ColorType, Decoder, Transformations};

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    #[error("not a PNG image: {0}")]
    NotPng(String),
    #[error("the image is {width}x{height} (width x height) but the model expects {want_w}x{want_h}")]
    Size {
        width: usize,
        height: usize,
        want_w: usize,
        want_h: usize,
    },
    #[error("image inputs need a model whose input shape is 2-D (height, width); this one is {0:?}")]
    NotImage(Vec<u64>),
}

/// Decodes `bytes` into `height * width` gray values in row-major order.
pub fn decode_gray(bytes: &[u8], input_shape: &[u64]) -> Result<Vec<f32>, ImageError> {
    let &[want_h, want_w] = input_shape else {
        return Err(ImageError::NotImage(input_shape.to_vec()));
    };
    let (want_h, want_w) = (want_h as usize, want_w as usize);
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(ImageError::NotPng("the file does not start with the PNG signature".into()));
    }
    let mut decoder = Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| ImageError::NotPng(e.to_string()))?;
    let (width, height) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    // Checked before allocating, so a huge declared size costs nothing.
    if (width, height) != (want_w, want_h) {
        return Err(ImageError::Size {
            width,
            height,
            want_w,
            want_h,
        });
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::NotPng("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| ImageError::NotPng(e.to_string()))?;
    let channels = match frame.color_type {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => {
            return Err(ImageError::NotPng("palette was not expanded".into()));
        }
    };
    let mut out = Vec::with_capacity(width * height);
    for row in buf[..frame.buffer_size()].chunks_exact(frame.line_size) {
        for px in row[..width * channels].chunks_exact(channels) {
            let gray = if channels >= 3 {
                let (r, g, b) = (px[0] as u32, px[1] as u32, px[2] as u32);
                ((r * 299 + g * 587 + b * 114 + 500) / 1000) as f32
            } else {
                px[0] as f32
            };
            out.push(gray);
        }
    }
    Ok(out)
}

/// Encodes gray pixels as an 8-bit grayscale PNG (used by tests and sample downloads).
pub fn encode_gray(pixels: &[u8], width: u32, height: u32) -> Vec<u8> {
    encode(pixels, width, height, ColorType::Grayscale)
}

/// Encodes 8-bit pixels of `color` as a PNG.
pub fn encode(pixels: &[u8], width: u32, height: u32, color: ColorType) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("writing to a Vec cannot fail");
        w.write_image_data(pixels).expect("pixel count matches the header");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grayscale_png_decodes_to_its_pixels() {
        let px: Vec<u8> = (0..6).map(|i| i * 40).collect();
        let got = decode_gray(&encode_gray(&px, 3, 2), &[2, 3]).unwrap();
        assert_eq!(got, px.iter().map(|&p| p as f32).collect::<Vec<_>>());
    }

    #[test]
    fn rgb_png_becomes_luma() {
        let px = [255u8, 0, 0, 0, 255, 0, 0, 0, 255, 10, 10, 10];
        let got = decode_gray(&encode(&px, 2, 2, ColorType::Rgb), &[2, 2]).unwrap();
        // Pillow: L = R * 299/1000 + G * 587/1000 + B * 114/1000, rounded.
        assert_eq!(got, vec![76.0, 150.0, 29.0, 10.0]);
    }

    #[test]
    fn wrong_size_is_refused_not_resized() {
        let err = decode_gray(&encode_gray(&[0; 12], 4, 3), &[3, 3]).unwrap_err();
        assert_eq!(err.to_string(), "the image is 4x3 (width x height) but the model expects 3x3");
    }

    #[test]
    fn non_png_bytes_are_refused() {
        assert!(matches!(decode_gray(b"GIF89a....", &[2, 2]), Err(ImageError::NotPng(_))));
        assert!(matches!(decode_gray(&[0; 4], &[4]), Err(ImageError::NotImage(_))));
    }
}
