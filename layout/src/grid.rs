//! TextDiffuser-2's coordinate grid: boxes as integers in 0..=128 on each axis, whatever the
//! canvas size (1 unit = 4 px at 512×512).

use crate::BBox;

/// Grid units per canvas side in TextDiffuser-2's layout format.
pub const GRID_SIZE: u32 = 128;

/// A box on TextDiffuser-2's 0..=128 grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GridBox {
    pub l: u32,
    pub t: u32,
    pub r: u32,
    pub b: u32,
}

impl GridBox {
    /// The box in pixels on a `width`×`height` canvas.
    pub fn to_pixels(&self, width: u32, height: u32) -> BBox {
        let px = |v: u32, side: u32| {
            (f64::from(v) * f64::from(side) / f64::from(GRID_SIZE)).round() as i32
        };
        BBox::new(
            px(self.l, width),
            px(self.t, height),
            px(self.r, width),
            px(self.b, height),
        )
    }
}

impl BBox {
    /// The box on TextDiffuser-2's grid for a `width`×`height` canvas: rounded to the nearest
    /// unit and clamped to 0..=128 (a box partly off the canvas keeps its on-canvas part).
    pub fn to_grid(&self, width: u32, height: u32) -> GridBox {
        let unit = |v: i32, side: u32| {
            let g = (f64::from(v) * f64::from(GRID_SIZE) / f64::from(side.max(1))).round();
            g.clamp(0.0, f64::from(GRID_SIZE)) as u32
        };
        GridBox {
            l: unit(self.left, width),
            t: unit(self.top, height),
            r: unit(self.right, width),
            b: unit(self.bottom, height),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_unit_is_four_pixels_at_512() {
        let g = GridBox {
            l: 20,
            t: 20,
            r: 100,
            b: 40,
        };
        assert_eq!(g.to_pixels(512, 512), BBox::new(80, 80, 400, 160));
        assert_eq!(BBox::new(80, 80, 400, 160).to_grid(512, 512), g);
    }

    #[test]
    fn grid_round_trips_on_any_canvas() {
        for (w, h) in [(512, 512), (1024, 256), (300, 700), (2048, 2048)] {
            for v in (0..=128).step_by(7) {
                let g = GridBox {
                    l: v / 2,
                    t: v / 3,
                    r: v,
                    b: v,
                };
                assert_eq!(g.to_pixels(w, h).to_grid(w, h), g, "{w}x{h} {g:?}");
            }
        }
    }

    #[test]
    fn off_canvas_coordinates_clamp() {
        assert_eq!(
            BBox::new(-40, -4, 600, 520).to_grid(512, 512),
            GridBox {
                l: 0,
                t: 0,
                r: 128,
                b: 128
            }
        );
    }
}
