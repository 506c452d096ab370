//! Medians and percentiles over small samples.

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// "min / median / max" of a sorted sample.
pub fn mmm(v: &[f64], prec: usize) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!(
        "{:.p$} / {:.p$} / {:.p$}",
        v[0],
        median(v),
        v[v.len() - 1],
        p = prec
    )
}
