//! What the plain sum of parts misses, fitted on genomes measured end to end: a per-model
//! overhead (session call, fusions across part boundaries), a factor, or both — and the form kept
//! is the one that predicts *held-out* genomes best (leave-one-out), the plain sum included, so a
//! correction fitted to noise is never kept.

use super::table::{Correction, CorrectionForm};

/// Fits `form` to the points by least squares on the *relative* error (weights `1 / measured²`);
/// `None` when the data cannot fix it (too few points: 2 for one parameter, 3 for two; sums that
/// do not vary; non-positive measurements) or the fit is not a latency: a factor that is not
/// positive.
pub fn fit(form: CorrectionForm, sums: &[f64], measured: &[f64]) -> Option<Correction> {
    let needs = if form == CorrectionForm::Affine { 3 } else { 2 };
    if sums.len() < needs || sums.len() != measured.len() || measured.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
        return None;
    }
    let (mut sw, mut sp, mut spp, mut sm, mut spm) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&p, &m) in sums.iter().zip(measured) {
        let w = 1.0 / (m * m);
        sw += w;
        sp += w * p;
        spp += w * p * p;
        sm += w * m;
        spm += w * p * m;
    }
    let (scale, offset_ms) = match form {
        CorrectionForm::Offset => (1.0, (sm - sp) / sw),
        CorrectionForm::Scale => (spm / spp, 0.0),
        CorrectionForm::Affine => {
            let det = spp * sw - sp * sp;
            if det.abs() <= 1e-12 * spp * sw || det.is_nan() {
                return None;
            }
            ((spm * sw - sp * sm) / det, (spp * sm - sp * spm) / det)
        }
    };
    (scale.is_finite() && scale > 0.0 && offset_ms.is_finite()).then_some(Correction { scale, offset_ms, form })
}

/// Mean relative error of `form` on each point when fitted on the others (`None`: the plain sum,
/// unfitted); `None` when some fit fails.
fn held_out_error(form: Option<CorrectionForm>, sums: &[f64], measured: &[f64]) -> Option<f64> {
    let mut total = 0.0;
    for i in 0..sums.len() {
        let rest = |v: &[f64]| v.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, x)| *x).collect::<Vec<_>>();
        let predicted = match form {
            None => sums[i],
            Some(f) => fit(f, &rest(sums), &rest(measured))?.apply(sums[i]),
        };
        total += ((predicted - measured[i]) / measured[i]).abs();
    }
    Some(total / sums.len() as f64)
}

/// The correction that predicts held-out points best ([`CorrectionForm`]s fitted on all points),
/// or `None` when the plain sum does (and `allow_plain`): leave-one-out mean relative error, the
/// simpler form on ties. With `allow_plain` false (a table adapted to another device, whose parts
/// were measured elsewhere) some correction is always returned when one fits.
pub fn choose(sums: &[f64], measured: &[f64], allow_plain: bool) -> Option<Correction> {
    let mut best: Option<(f64, Option<CorrectionForm>)> = None;
    let plain = allow_plain.then_some(None);
    let forms = [CorrectionForm::Offset, CorrectionForm::Scale, CorrectionForm::Affine].map(Some);
    for form in plain.into_iter().chain(forms) {
        let Some(error) = held_out_error(form, sums, measured) else { continue };
        if best.is_none_or(|(e, _)| error < e * (1.0 - 1e-9)) {
            best = Some((error, form));
        }
    }
    match best {
        Some((_, Some(form))) => fit(form, sums, measured),
        Some((_, None)) => None,
        // too few points for any held-out comparison: the one-parameter fit that needs least
        None if !allow_plain => fit(CorrectionForm::Scale, sums, measured),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_forms_are_recovered() {
        let measured = [10.0, 20.0, 40.0, 80.0];
        let sums: Vec<f64> = measured.iter().map(|m| (m + 2.0) / 0.8).collect();
        let c = fit(CorrectionForm::Affine, &sums, &measured).unwrap();
        assert!((c.scale - 0.8).abs() < 1e-9 && (c.offset_ms + 2.0).abs() < 1e-9, "{c:?}");
        assert!(fit(CorrectionForm::Affine, &sums[..2], &measured[..2]).is_none());
        assert!(fit(CorrectionForm::Affine, &[5.0, 5.0, 5.0], &[1.0, 2.0, 3.0]).is_none());
        let c = fit(CorrectionForm::Offset, &[1.0, 2.0], &[1.5, 2.5]).unwrap();
        assert!((c.scale - 1.0).abs() < 1e-12 && (c.offset_ms - 0.5).abs() < 1e-9, "{c:?}");
        let c = fit(CorrectionForm::Scale, &[1.0, 2.0], &[2.0, 4.0]).unwrap();
        assert!((c.scale - 2.0).abs() < 1e-9 && c.offset_ms == 0.0, "{c:?}");
        // a falling line is no latency correction
        assert!(fit(CorrectionForm::Affine, &[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).is_none());
    }

    #[test]
    fn the_form_kept_is_the_one_that_predicts_held_out_points_best() {
        let sums = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
        let with = |f: &dyn Fn(f64) -> f64| sums.iter().map(|&s| f(s)).collect::<Vec<_>>();
        let c = choose(&sums, &with(&|s| 1.2 * s + 3.0), true).expect("a systematic bias is corrected");
        assert_eq!(c.form, CorrectionForm::Affine);
        assert!((c.scale - 1.2).abs() < 1e-9 && (c.offset_ms - 3.0).abs() < 1e-9, "{c:?}");
        let c = choose(&sums, &with(&|s| s + 4.0), true).unwrap();
        assert_eq!((c.form, c.scale), (CorrectionForm::Offset, 1.0), "an overhead per model: {c:?}");
        let c = choose(&sums, &with(&|s| 2.0 * s), true).unwrap();
        assert_eq!(c.form, CorrectionForm::Scale, "{c:?}");
        // the sum is right on average but the timings drift: every fitted form only adds error
        let drifting = [10.0, 26.0, 24.0, 52.0, 41.0, 66.0];
        assert_eq!(choose(&sums, &drifting, true), None);
        // an adapted table always gets a correction
        assert!(choose(&sums, &drifting, false).is_some());
        assert_eq!(choose(&[10.0], &[20.0], false), None, "one point fixes nothing");
    }
}
