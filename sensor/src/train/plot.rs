//! The model card's ROC figure, rasterised to PNG.

use std::path::Path;

/// A ROC curve's points and its RGB colour.
pub type Curve<'a> = (&'a [(f64, f64)], [u8; 3]);

/// Draws ROC curves (each a colour) into a PNG: white square, axes, diagonal. No text: the model
/// card names the curves.
pub fn roc_png(
    path: &Path,
    curves: &[Curve<'_>],
    marker: Option<(f64, f64)>,
) -> std::io::Result<()> {
    const W: usize = 480;
    const M: usize = 20;
    let mut px = vec![255u8; W * W * 3];
    let put = |x: usize, y: usize, c: [u8; 3], px: &mut Vec<u8>| {
        if x < W && y < W {
            let i = (y * W + x) * 3;
            px[i..i + 3].copy_from_slice(&c);
        }
    };
    let to_px = |fx: f64, fy: f64| {
        let s = (W - 2 * M) as f64;
        (
            M + (fx.clamp(0.0, 1.0) * s) as usize,
            W - M - (fy.clamp(0.0, 1.0) * s) as usize,
        )
    };
    let line = |a: (f64, f64), b: (f64, f64), c: [u8; 3], px: &mut Vec<u8>, thick: bool| {
        let (p, q) = (to_px(a.0, a.1), to_px(b.0, b.1));
        let steps = (p.0.abs_diff(q.0)).max(p.1.abs_diff(q.1)).max(1);
        for k in 0..=steps {
            let t = k as f64 / steps as f64;
            let x = (p.0 as f64 + (q.0 as f64 - p.0 as f64) * t).round() as usize;
            let y = (p.1 as f64 + (q.1 as f64 - p.1 as f64) * t).round() as usize;
            put(x, y, c, px);
            if thick {
                put(x + 1, y, c, px);
                put(x, y + 1, c, px);
            }
        }
    };
    let grey = [190, 190, 190];
    for k in 0..=10 {
        let v = k as f64 / 10.0;
        line((v, 0.0), (v, 1.0), [235, 235, 235], &mut px, false);
        line((0.0, v), (1.0, v), [235, 235, 235], &mut px, false);
    }
    line((0.0, 0.0), (1.0, 1.0), grey, &mut px, false);
    line((0.0, 0.0), (1.0, 0.0), [0, 0, 0], &mut px, false);
    line((0.0, 0.0), (0.0, 1.0), [0, 0, 0], &mut px, false);
    for (pts, c) in curves {
        for w in pts.windows(2) {
            line(w[0], w[1], *c, &mut px, true);
        }
    }
    if let Some((fx, fy)) = marker {
        let (x, y) = to_px(fx, fy);
        for dx in 0..9 {
            for dy in 0..9 {
                put(x + dx - 4.min(x), y + dy - 4.min(y), [220, 0, 0], &mut px);
            }
        }
    }
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, W as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    w.write_image_data(&px).map_err(std::io::Error::other)?;
    Ok(())
}
