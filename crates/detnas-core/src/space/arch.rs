//! Architectures: one [`Choice`] per layer, with parsing, validation and the published presets.

use crate::error::{CoreError, Result};
use crate::space::{Choice, SearchSpace};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A path through a search space: the choice of every layer, stage 1 first.
///
/// An `Arch` on its own is only syntactically valid; [`Arch::validate`] checks it against a space.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    choices: Vec<Choice>,
}

impl Arch {
    /// Builds an architecture from choices.
    pub fn new(choices: Vec<Choice>) -> Self {
        Arch { choices }
    }

    /// Parses `2,1,2,0,...` (commas, optional spaces) or the compact `2120...` form.
    /// Every choice must be one of the digits 0-3.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Err(CoreError::EmptyArch { expected: 0 });
        }
        let tokens: Vec<&str> = if text.contains(',') || text.contains(char::is_whitespace) {
            text.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty()).collect()
        } else {
            text.char_indices().map(|(i, c)| &text[i..i + c.len_utf8()]).collect()
        };
        let mut choices = Vec::with_capacity(tokens.len());
        for (position, token) in tokens.iter().enumerate() {
            let choice = token.parse::<u8>().ok().and_then(Choice::from_index).filter(|_| token.len() == 1);
            match choice {
                Some(c) => choices.push(c),
                None => return Err(CoreError::BadArchToken { position, token: token.to_string() }),
            }
        }
        if choices.is_empty() {
            return Err(CoreError::EmptyArch { expected: 0 });
        }
        Ok(Arch { choices })
    }

    /// Parses `text` and validates it against `space`.
    pub fn parse_for(text: &str, space: &SearchSpace) -> Result<Self> {
        match Self::parse(text) {
            Err(CoreError::EmptyArch { .. }) => Err(CoreError::EmptyArch { expected: space.num_layers() }),
            Err(e) => Err(e),
            Ok(arch) => {
                arch.validate(space)?;
                Ok(arch)
            }
        }
    }

    /// Checks the length and every choice against `space`.
    pub fn validate(&self, space: &SearchSpace) -> Result<()> {
        if self.choices.len() != space.num_layers() {
            return Err(CoreError::ArchLength {
                space: space.name.clone(),
                expected: space.num_layers(),
                got: self.choices.len(),
            });
        }
        if let Some((layer, c)) = self.choices.iter().enumerate().find(|(_, c)| !space.allowed.contains(c)) {
            return Err(CoreError::ChoiceNotAllowed {
                space: space.name.clone(),
                layer,
                value: c.index(),
                allowed: space.allowed_description(),
            });
        }
        Ok(())
    }

    /// The choices, layer 0 first.
    pub fn choices(&self) -> &[Choice] {
        &self.choices
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.choices.len()
    }

    /// Whether there are no layers (never true for a parsed arch).
    pub fn is_empty(&self) -> bool {
        self.choices.is_empty()
    }

    /// The compact form `2120...`, used as a cache key.
    pub fn compact(&self) -> String {
        self.choices.iter().map(|c| char::from(b'0' + c.index())).collect()
    }

    /// The same choice at every layer of `space` (e.g. the ShuffleNetV2 reference nets).
    pub fn uniform(space: &SearchSpace, choice: Choice) -> Self {
        Arch { choices: vec![choice; space.num_layers()] }
    }
}

impl fmt::Display for Arch {
    /// Comma form: `2,1,2,0,...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.choices.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", c.index())?;
        }
        Ok(())
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Arch::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A published architecture with the space it belongs to.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Short name (`coco-fpn-300m`, ...), as `--arch` accepts it.
    pub name: &'static str,
    /// Name of the space the architecture belongs to.
    pub space: &'static str,
    /// The architecture's encoding (one choice per layer, comma separated).
    pub encoding: &'static str,
    /// Where the architecture comes from, for listings.
    pub description: &'static str,
}

/// The published encodings (DetNAS and SPOS authors' code) and the ShuffleNetV2 reference nets.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "coco-fpn-300m",
        space: "detnas-300m",
        encoding: "2,1,2,0,2,1,1,2,3,3,1,3,0,0,3,1,3,1,3,2",
        description: "DetNAS COCO FPN Faster R-CNN 300M (36.4 mmAP)",
    },
    Preset {
        name: "coco-retinanet-300m",
        space: "detnas-300m",
        encoding: "2,3,1,1,3,2,1,3,3,1,1,1,3,3,2,0,3,3,3,3",
        description: "DetNAS COCO RetinaNet 300M (33.3 mmAP)",
    },
    Preset {
        name: "coco-fpn-1.3g",
        space: "detnas-1.3g",
        encoding: "0,0,3,1,2,1,0,2,0,3,1,2,3,3,2,0,2,1,1,3,2,0,2,2,2,1,3,1,0,3,3,3,1,3,3,3,3,3,3,3",
        description: "DetNAS COCO FPN Faster R-CNN 1.3G (40.0 mmAP)",
    },
    Preset {
        name: "coco-fpn-3.8g",
        space: "detnas-3.8g",
        encoding: "0,0,3,1,2,1,0,2,0,3,1,2,3,3,2,0,2,1,1,3,2,0,2,2,2,1,3,1,0,3,3,3,1,3,3,3,3,3,3,3",
        description: "DetNAS COCO FPN 3.8G: the 1.3G encoding in the wider space (42.0 mmAP)",
    },
    Preset {
        name: "spos-300m",
        space: "detnas-300m",
        encoding: "2,1,0,1,2,0,2,0,2,0,2,3,0,0,0,0,3,2,3,3",
        description: "Single Path One-Shot classification search result",
    },
    Preset {
        name: "shufflenetv2-0.5x",
        space: "shufflenetv2-0.5x",
        encoding: "0000000000000000",
        description: "ShuffleNetV2 0.5x reference net (41M FLOPs)",
    },
    Preset {
        name: "shufflenetv2-1.0x",
        space: "shufflenetv2-1.0x",
        encoding: "0000000000000000",
        description: "ShuffleNetV2 1.0x reference net (146M FLOPs)",
    },
    Preset {
        name: "shufflenetv2-1.5x",
        space: "shufflenetv2-1.5x",
        encoding: "0000000000000000",
        description: "ShuffleNetV2 1.5x reference net (299M FLOPs)",
    },
    Preset {
        name: "shufflenetv2-2.0x",
        space: "shufflenetv2-2.0x",
        encoding: "0000000000000000",
        description: "ShuffleNetV2 2.0x reference net (591M FLOPs)",
    },
];

impl Preset {
    /// Looks a preset up by name.
    pub fn by_name(name: &str) -> Result<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name).ok_or_else(|| CoreError::UnknownPreset {
            name: name.to_string(),
            known: PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// The preset's space and architecture.
    pub fn resolve(&self) -> (SearchSpace, Arch) {
        let space = SearchSpace::by_name(self.space).expect("preset space is built in");
        let arch = Arch::parse_for(self.encoding, &space).expect("preset encoding is valid");
        (space, arch)
    }
}

/// Resolves the user's `--space` and `--arch` pair: `arch` is a preset name or an encoding; `space`
/// may be omitted for a preset. A preset given with a different space is an error.
pub fn resolve(space: Option<&str>, arch: &str) -> Result<(SearchSpace, Arch)> {
    let looks_like_preset = arch.chars().any(|c| c.is_ascii_alphabetic());
    if looks_like_preset {
        let preset = Preset::by_name(arch.trim())?;
        if let Some(s) = space {
            // Validate the space name first so a typo there is reported as such.
            let requested = SearchSpace::by_name(s)?;
            if requested.name != preset.space {
                return Err(CoreError::PresetSpaceMismatch {
                    preset: preset.name.to_string(),
                    preset_space: preset.space.to_string(),
                    space: requested.name,
                });
            }
        }
        return Ok(preset.resolve());
    }
    let space = SearchSpace::by_name(space.unwrap_or("detnas-300m"))?;
    let arch = Arch::parse_for(arch, &space)?;
    Ok((space, arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comma_and_compact_forms_identically() {
        let a = Arch::parse("2,1,2,0, 2,1,1,2").unwrap();
        let b = Arch::parse("21202112").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2,1,2,0,2,1,1,2");
        assert_eq!(a.compact(), "21202112");
    }

    #[test]
    fn every_preset_is_valid_in_its_space() {
        for p in PRESETS {
            let (space, arch) = p.resolve();
            assert_eq!(arch.len(), space.num_layers(), "{}", p.name);
        }
    }

    #[test]
    fn rejects_bad_inputs_with_named_problems() {
        let space = SearchSpace::detnas_300m();
        let empty = Arch::parse_for("", &space).unwrap_err().to_string();
        assert!(empty.contains("empty") && empty.contains("20"), "{empty}");
        let short = Arch::parse_for("2,1,2", &space).unwrap_err().to_string();
        assert!(short.contains("3 choices") && short.contains("20 layers"), "{short}");
        let seven = Arch::parse_for(&"7".repeat(20), &space).unwrap_err().to_string();
        assert!(seven.contains("`7`"), "{seven}");
        let word = Arch::parse_for("2,x,1", &space).unwrap_err().to_string();
        assert!(word.contains("token 1") && word.contains("`x`"), "{word}");
        let two_digits = Arch::parse("2,10,1").unwrap_err().to_string();
        assert!(two_digits.contains("`10`"), "{two_digits}");
    }

    #[test]
    fn reference_nets_allow_only_choice_zero() {
        let space = SearchSpace::by_name("shufflenetv2-1.0x").unwrap();
        let err = Arch::parse_for(&"1".repeat(16), &space).unwrap_err().to_string();
        assert!(err.contains("layer 0") && err.contains("choice 1"), "{err}");
    }

    #[test]
    fn resolve_checks_preset_space() {
        assert!(resolve(None, "coco-fpn-1.3g").is_ok());
        assert!(resolve(Some("detnas-1.3g"), "coco-fpn-1.3g").is_ok());
        let err = resolve(Some("detnas-300m"), "coco-fpn-1.3g").unwrap_err().to_string();
        assert!(err.contains("detnas-1.3g"), "{err}");
        assert!(resolve(Some("nope"), "2120").unwrap_err().to_string().contains("unknown search space"));
    }

    #[test]
    fn serde_round_trip() {
        let a = Arch::parse("0123").unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"0,1,2,3\"");
        assert_eq!(serde_json::from_str::<Arch>(&json).unwrap(), a);
    }
}
