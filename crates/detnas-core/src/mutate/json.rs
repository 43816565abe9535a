//! Structural mutations of JSON documents: one value of the tree changed, so that the result still
//! parses as JSON and reaches the checks behind the syntax (ids, sizes, lists, references).

use crate::rng::Rng;
use serde_json::{Number, Value};

/// What a structural JSON mutation changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonEdit {
    /// A number replaced with an edge value (`-1`, `0`, `1e308`, `2^64 - 1`, `-2^63`, `0.5`, ...).
    Number,
    /// A string emptied, lengthened, turned into a path that climbs out (`../`) or a number.
    String,
    /// An array element removed or repeated, or the array emptied.
    Array,
    /// An object member removed, or an unknown member added.
    Object,
    /// A value replaced with `null`, `true`, `{}`, `[]` or a copy of another value of the document.
    Replace,
}

fn numbers() -> [Value; 10] {
    [
        Value::from(0),
        Value::from(-1),
        Value::from(u64::MAX),
        Value::from(i64::MIN),
        Value::from(4_294_967_296u64),
        Value::from(1e308),
        Value::from(-1e308),
        Value::from(0.5),
        Value::from(1e-300),
        Value::Number(Number::from(9_007_199_254_740_993u64)),
    ]
}

/// Number of values in the tree (the root included).
fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// The `k`-th value in pre-order (`k` counts down).
fn nth<'a>(v: &'a mut Value, k: &mut usize) -> Option<&'a mut Value> {
    if *k == 0 {
        return Some(v);
    }
    *k -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|x| nth(x, k)),
        Value::Object(o) => o.values_mut().find_map(|x| nth(x, k)),
        _ => None,
    }
}

/// Changes one value of `doc`, chosen uniformly over the tree, and says how.
pub(super) fn edit(rng: &mut Rng, doc: &mut Value) -> JsonEdit {
    let total = count(doc);
    let donor = {
        let mut k = rng.below(total as u64) as usize;
        nth(doc, &mut k).cloned().unwrap_or(Value::Null)
    };
    let mut k = rng.below(total as u64) as usize;
    let Some(node) = nth(doc, &mut k) else { return JsonEdit::Replace };
    let replace = rng.below(4) == 0;
    match node {
        Value::Number(_) if !replace => {
            *node = rng.pick(&numbers()).clone();
            JsonEdit::Number
        }
        Value::String(s) if !replace => {
            *s = match rng.below(4) {
                0 => String::new(),
                1 => s.repeat(64),
                2 => format!("../../{s}"),
                _ => "99999999999".to_owned(),
            };
            JsonEdit::String
        }
        Value::Array(a) if !replace && !a.is_empty() => {
            let at = rng.below(a.len() as u64) as usize;
            match rng.below(3) {
                0 => drop(a.remove(at)),
                1 => a.insert(at, a[at].clone()),
                _ => a.clear(),
            }
            JsonEdit::Array
        }
        Value::Object(o) if !replace && !o.is_empty() => {
            if rng.below(2) == 0 {
                let key = o.keys().nth(rng.below(o.len() as u64) as usize).cloned().unwrap_or_default();
                o.remove(&key);
            } else {
                o.insert("fuzz_unknown".to_owned(), Value::from(1));
            }
            JsonEdit::Object
        }
        _ => {
            *node = match rng.below(5) {
                0 => Value::Null,
                1 => Value::Bool(true),
                2 => Value::Object(Default::default()),
                3 => Value::Array(Vec::new()),
                _ => donor,
            };
            JsonEdit::Replace
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edit_keeps_json_and_changes_the_document() {
        let doc: Value = serde_json::json!({"images": [{"id": 1, "file_name": "a.png"}], "n": 3, "ok": true});
        let mut kinds = std::collections::BTreeSet::new();
        let mut changed = 0;
        for seed in 0..300 {
            let mut rng = Rng::seed(seed);
            let mut v = doc.clone();
            kinds.insert(format!("{:?}", edit(&mut rng, &mut v)));
            let text = serde_json::to_string(&v).unwrap();
            assert!(serde_json::from_str::<Value>(&text).is_ok());
            changed += usize::from(v != doc);
        }
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        assert!(changed > 200, "only {changed} of 300 edits changed the document");
    }
}
