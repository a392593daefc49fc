//! The model card's figures, drawn as SVG with plotters: the ROC of the combined score and the
//! recall by attack category. Each names its axes and series itself, so it reads without the
//! card. SVG text is written as `<text>` elements and set by whatever shows the file, so drawing
//! needs no fonts.

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::evaluate::{Evaluation, pct};

/// The ROC figure's file name, beside the model card.
pub const ROC_FILE: &str = "roc.svg";
/// The recall figure's file name, beside the model card.
pub const RECALL_FILE: &str = "recall_by_category.svg";

const FONT: &str = "sans-serif";
const TEST_COLOUR: RGBColor = RGBColor(30, 90, 200);
const HOLDOUT_COLOUR: RGBColor = RGBColor(20, 140, 60);
const CHANCE_COLOUR: RGBColor = RGBColor(150, 150, 150);
const NOVEL_COLOUR: RGBColor = RGBColor(220, 120, 20);

/// A figure could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {figure}: {reason}")]
pub struct PlotError {
    pub figure: &'static str,
    pub reason: String,
}

/// A figure of the model card.
pub struct Figure {
    /// File name, beside the card.
    pub file: &'static str,
    /// What it shows, in a few words (the image's alternative text).
    pub title: String,
    /// The card's caption.
    pub caption: String,
    /// The SVG document.
    pub svg: String,
}

/// One curve of a ROC figure: an evaluation's ROC points and its operating point (the
/// false-positive and true-positive rates of the model's verdicts).
pub struct RocCurve<'a> {
    pub name: &'a str,
    pub evaluation: &'a Evaluation,
    pub colour: RGBColor,
}

/// The card's figures: the ROC on KDDTest+ (if evaluated) and on the holdout, and the recall by
/// attack category on KDDTest+ (if evaluated).
pub fn card_figures(
    holdout: &Evaluation,
    test: Option<&Evaluation>,
) -> Result<Vec<Figure>, PlotError> {
    let mut curves = Vec::new();
    if let Some(e) = test {
        curves.push(RocCurve {
            name: "KDDTest+",
            evaluation: e,
            colour: TEST_COLOUR,
        });
    }
    curves.push(RocCurve {
        name: "15% holdout",
        evaluation: holdout,
        colour: HOLDOUT_COLOUR,
    });
    let roc_title = "ROC of the combined score, deployed model";
    let mut figures = vec![Figure {
        file: ROC_FILE,
        title: roc_title.to_string(),
        caption: "ROC of the combined score (each detector's score over its threshold, the larger one) on KDDTest+ and on the 15% holdout; the dots mark the operating points of the deployed thresholds.".to_string(),
        svg: roc_svg(roc_title, &curves)?,
    }];
    if let Some(e) = test {
        let title = "Recall by attack category on KDDTest+, deployed model";
        figures.push(Figure {
            file: RECALL_FILE,
            title: title.to_string(),
            caption: "share of KDDTest+ attack rows flagged, per attack category and for the attack types absent from the training file (row counts above the bars).".to_string(),
            svg: recall_svg(title, &category_recalls(e))?,
        });
    }
    Ok(figures)
}

/// One bar of a recall figure: a group of attack rows and the share of them flagged.
pub struct Bar {
    pub name: String,
    pub recall: f64,
    pub rows: usize,
    pub colour: RGBColor,
}

/// The bars of the recall figure: each attack category, then, in another colour since its rows
/// are also in the categories, the attack types absent from training.
fn category_recalls(e: &Evaluation) -> Vec<Bar> {
    let mut bars: Vec<Bar> = e
        .recall_by_category
        .iter()
        .map(|(k, (r, n))| Bar {
            name: k.clone(),
            recall: *r,
            rows: *n,
            colour: TEST_COLOUR,
        })
        .collect();
    if let Some((r, n)) = e.novel_attack_recall {
        bars.push(Bar {
            name: "types absent from training".to_string(),
            recall: r,
            rows: n,
            colour: NOVEL_COLOUR,
        });
    }
    bars
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

fn drawing_error(figure: &'static str) -> impl FnOnce(Box<dyn std::error::Error>) -> PlotError {
    move |e| PlotError {
        figure,
        reason: e.to_string(),
    }
}

/// A ROC figure: the curves, the chance diagonal and each curve's operating point, with labelled
/// percentage axes and a legend.
pub fn roc_svg(title: &str, curves: &[RocCurve<'_>]) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw_roc(&mut svg, title, curves).map_err(drawing_error(ROC_FILE))?;
    Ok(svg)
}

/// A bar chart of recall per group of attack rows, each bar labelled with its recall and rows.
pub fn recall_svg(title: &str, bars: &[Bar]) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw_recall(&mut svg, title, bars).map_err(drawing_error(RECALL_FILE))?;
    Ok(svg)
}

fn percent_tick(v: &f64) -> String {
    format!("{:.0}%", v * 100.0)
}

/// A chart on `root` with the figures' title, margins and room for the axes' labels; the right
/// margin leaves room for the last x label.
fn titled<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    right: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut chart = ChartBuilder::on(root);
    chart
        .caption(title, (FONT, 22))
        .margin(16)
        .margin_right(right)
        .x_label_area_size(48)
        .y_label_area_size(64);
    chart
}

fn draw_roc(svg: &mut String, title: &str, curves: &[RocCurve<'_>]) -> Drawn {
    let root = SVGBackend::with_string(svg, (640, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = titled(&root, title, 32).build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("false-positive rate")
        .y_desc("true-positive rate (recall)")
        .x_labels(11)
        .y_labels(11)
        .x_label_formatter(&percent_tick)
        .y_label_formatter(&percent_tick)
        .max_light_lines(1)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            6,
            4,
            CHANCE_COLOUR.into(),
        ))?
        .label("chance")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], CHANCE_COLOUR));
    for c in curves {
        let style = c.colour.stroke_width(2);
        chart
            .draw_series(LineSeries::new(c.evaluation.roc.iter().copied(), style))?
            .label(format!(
                "{}: ROC-AUC {:.4}",
                c.name, c.evaluation.metrics.roc_auc
            ))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    for c in curves {
        let m = &c.evaluation.metrics;
        let dot = c.colour.filled();
        chart
            .draw_series(std::iter::once(Circle::new(
                (m.false_positive_rate, m.recall),
                5,
                dot,
            )))?
            .label(format!(
                "{} operating point: FPR {}, TPR {}",
                c.name,
                pct(m.false_positive_rate),
                pct(m.recall)
            ))
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, dot));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .margin(12)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

fn draw_recall(svg: &mut String, title: &str, bars: &[Bar]) -> Drawn {
    let root = SVGBackend::with_string(svg, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    // One segment per bar (the range's ends are both segments), and headroom above 100% for
    // the labels over the bars.
    let mut chart = titled(&root, title, 24).build_cartesian_2d(
        (0..bars.len().saturating_sub(1)).into_segmented(),
        0.0..1.08,
    )?;
    let category = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.name.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    let at_most_100 = |v: &f64| {
        if *v <= 1.0 + 1e-9 {
            percent_tick(v)
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("attack category")
        .y_desc("recall: attack rows flagged")
        .x_label_formatter(&category)
        .y_label_formatter(&at_most_100)
        .y_labels(12)
        .max_light_lines(1)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), b.recall),
            ],
            b.colour.filled(),
        );
        bar.set_margin(0, 0, 18, 18);
        bar
    }))?;
    let above = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        Text::new(
            format!("{} of {} rows", pct(b.recall), b.rows),
            (SegmentValue::CenterOf(i), b.recall + 0.01),
            above.clone(),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::ClassificationMetrics;

    fn evaluation() -> Evaluation {
        Evaluation {
            data: "test".into(),
            metrics: ClassificationMetrics {
                rows: 4,
                recall: 0.5,
                false_positive_rate: 0.25,
                roc_auc: 0.875,
                ..ClassificationMetrics::default()
            },
            recall_by_category: BTreeMap::from([
                ("DoS".to_string(), (0.9, 10)),
                ("R2L".to_string(), (0.25, 4)),
            ]),
            novel_attack_recall: Some((0.5, 2)),
            flagged_by: BTreeMap::new(),
            roc: vec![(0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (1.0, 1.0)],
        }
    }

    /// The contents of a document's `<text>` elements: what a reader sees as words.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim())
            })
            .collect()
    }

    #[test]
    fn figures_name_their_axes_series_and_categories() {
        let (holdout, test) = (evaluation(), evaluation());
        let figures = card_figures(&holdout, Some(&test)).unwrap();
        let files: Vec<&str> = figures.iter().map(|f| f.file).collect();
        assert_eq!(files, [ROC_FILE, RECALL_FILE]);
        let roc = &figures[0].svg;
        assert!(roc.starts_with("<svg") && roc.trim_end().ends_with("</svg>"));
        let words = texts(roc);
        for text in [
            "ROC of the combined score, deployed model",
            "false-positive rate",
            "true-positive rate (recall)",
            "0%",
            "50%",
            "100%",
            "chance",
            "KDDTest+: ROC-AUC 0.8750",
            "15% holdout: ROC-AUC 0.8750",
            "KDDTest+ operating point: FPR 25.00%, TPR 50.00%",
        ] {
            assert!(
                words.contains(&text),
                "{text:?} not in the ROC figure: {words:?}"
            );
        }
        let words = texts(&figures[1].svg);
        for text in [
            "Recall by attack category on KDDTest+, deployed model",
            "attack category",
            "recall: attack rows flagged",
            "DoS",
            "R2L",
            "types absent from training",
            "90.00% of 10 rows",
        ] {
            assert!(
                words.contains(&text),
                "{text:?} not in the recall figure: {words:?}"
            );
        }
    }

    #[test]
    fn without_a_test_evaluation_only_the_holdout_roc_is_drawn() {
        let holdout = evaluation();
        let figures = card_figures(&holdout, None).unwrap();
        assert_eq!(figures.len(), 1);
        assert!(!figures[0].svg.contains("KDDTest+"));
    }
}
