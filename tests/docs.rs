//! The documentation against the tree and the real command line: every `detnas` command shown in
//! README.md and docs/*.md (fenced shell blocks and inline code) names a real subcommand and only
//! flags its `--help` lists, every relative link resolves, and every repository file they name
//! exists.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// The README stays a front page; the details live in docs/.
const README_MAX_LINES: usize = 260;

/// Folders of the repository whose files the documentation names by path (`tools/test.sh`).
const CHECKED_FOLDERS: [&str; 7] = ["tools/", "examples/", "tests/", "benches/", "crates/", "models/", ".ci/"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md (sorted): (path relative to the repository, text).
fn documents() -> Vec<(String, String)> {
    let mut chapters: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    chapters.sort();
    std::iter::once("README.md".to_string())
        .chain(chapters)
        .map(|n| {
            let text = std::fs::read_to_string(root().join(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
            (n, text)
        })
        .collect()
}

/// A fenced code block: the first word of its info string and its lines with 1-based numbers.
struct Block {
    lang: String,
    lines: Vec<(usize, String)>,
}

/// Splits Markdown into its fenced code blocks and its prose (one entry per line, fenced lines
/// blank, so line numbers stay).
fn split_fences(text: &str) -> (Vec<Block>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<(String, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let mut close = false;
        match &mut open {
            None if trimmed.starts_with("```") || trimmed.starts_with("~~~") => {
                let fence = trimmed.chars().next().unwrap();
                let marker: String = trimmed.chars().take_while(|&c| c == fence).collect();
                let info = trimmed[marker.len()..].trim();
                let lang = info.split(|c: char| c.is_whitespace() || c == ',' || c == '{').next().unwrap_or("");
                open = Some((marker, Block { lang: lang.to_lowercase(), lines: Vec::new() }));
                prose.push(String::new());
            }
            None => prose.push(line.to_string()),
            Some((marker, block)) => {
                prose.push(String::new());
                let fence = marker.chars().next().unwrap();
                if trimmed.starts_with(marker.as_str()) && trimmed.trim_end().chars().all(|c| c == fence) {
                    close = true;
                } else {
                    block.lines.push((i + 1, line.to_string()));
                }
            }
        }
        if close {
            blocks.push(open.take().unwrap().1);
        }
    }
    if let Some((_, block)) = open {
        blocks.push(block);
    }
    (blocks, prose)
}

/// The command lines of a shell-like block, continuation lines (`\`) joined: (line, command). In
/// `console` and `text` blocks, and in any block that uses a `$ ` prompt, only prompted lines are
/// commands (the rest is output).
fn shell_commands(block: &Block) -> Vec<(usize, String)> {
    let lang = block.lang.as_str();
    if !matches!(lang, "sh" | "bash" | "shell" | "zsh" | "console" | "text") {
        return Vec::new();
    }
    let prompted = block.lines.iter().any(|(_, l)| l.trim_start().starts_with("$ "));
    let only_prompted = prompted || matches!(lang, "console" | "text");
    let mut commands = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in &block.lines {
        let (start, body) = match pending.take() {
            Some((start, acc)) => (start, format!("{acc} {}", line.trim())),
            None => {
                let t = line.trim_start();
                match t.strip_prefix("$ ") {
                    Some(rest) => (*n, rest.to_string()),
                    None if only_prompted => continue,
                    None => (*n, t.to_string()),
                }
            }
        };
        let end = body.trim_end();
        match end.strip_suffix('\\') {
            Some(head) => pending = Some((start, head.trim_end().to_string())),
            None if !end.is_empty() => commands.push((start, end.to_string())),
            None => {}
        }
    }
    commands.extend(pending);
    commands
}

/// Splits a shell command line into simple commands (at `|`, `||`, `&&`, `;`, `&`), each a list of
/// words with quotes and escapes removed. A `#` that starts a word begins a comment; redirections
/// and their targets are dropped.
fn shell_segments(line: &str) -> Vec<Vec<String>> {
    struct Words {
        segments: Vec<Vec<String>>,
        words: Vec<String>,
        word: String,
        in_word: bool,
        drop_next: bool,
    }
    impl Words {
        fn end_word(&mut self) {
            if self.in_word {
                let word = std::mem::take(&mut self.word);
                if self.drop_next {
                    self.drop_next = false;
                } else {
                    self.words.push(word);
                }
                self.in_word = false;
            }
        }
        fn end_segment(&mut self) {
            self.end_word();
            if !self.words.is_empty() {
                self.segments.push(std::mem::take(&mut self.words));
            }
        }
    }
    let mut w =
        Words { segments: Vec::new(), words: Vec::new(), word: String::new(), in_word: false, drop_next: false };
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                w.in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.word.push(c);
                }
            }
            '"' => {
                w.in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.word.extend(chars.next()),
                        c => w.word.push(c),
                    }
                }
            }
            '\\' => {
                w.in_word = true;
                w.word.extend(chars.next());
            }
            '#' if !w.in_word => break,
            '|' | '&' | ';' => {
                while matches!(chars.peek(), Some('|' | '&' | ';')) {
                    chars.next();
                }
                w.end_segment();
            }
            '>' | '<' => {
                if w.in_word && w.word.chars().all(|c| c.is_ascii_digit()) {
                    // The file descriptor of `2>`.
                    w.word.clear();
                    w.in_word = false;
                } else {
                    w.end_word();
                }
                while matches!(chars.peek(), Some('>' | '&')) {
                    chars.next();
                }
                w.drop_next = true;
            }
            c if c.is_whitespace() => w.end_word(),
            c => {
                w.in_word = true;
                w.word.push(c);
            }
        }
    }
    w.end_segment();
    w.segments
}

/// The inline code spans of the prose: (line where the span starts, content with line breaks as
/// spaces). A span never crosses a blank line.
fn code_spans(prose: &[String]) -> Vec<(usize, String)> {
    let mut spans = Vec::new();
    // (line, length of the opening backtick run, content)
    let mut open: Option<(usize, usize, String)> = None;
    for (i, line) in prose.iter().enumerate() {
        if line.trim().is_empty() {
            open = None;
            continue;
        }
        if let Some((_, _, content)) = open.as_mut() {
            content.push(' ');
        }
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '`' {
                if let Some((_, _, content)) = open.as_mut() {
                    content.push(c);
                }
                continue;
            }
            let mut run = 1;
            while chars.peek() == Some(&'`') {
                chars.next();
                run += 1;
            }
            match open.as_mut() {
                Some((start, n, content)) if *n == run => {
                    spans.push((*start, content.trim().to_string()));
                    open = None;
                }
                Some((_, _, content)) => content.push_str(&"`".repeat(run)),
                None => open = Some((i + 1, run, String::new())),
            }
        }
    }
    spans
}

/// What a command line runs.
enum Invocation {
    /// The `detnas` command line, with these arguments.
    Cli(Vec<String>),
    /// `cargo run --example NAME`.
    Example(String),
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `detnas ...`, `target/release/detnas ...`, `tools/detnas.sh ...` and `cargo run ... -- ...`
/// (after environment assignments); `None` for any other program.
fn invocation(words: &[String]) -> Option<Invocation> {
    let start = words.iter().position(|w| !is_assignment(w))?;
    let program = words[start].as_str();
    let rest = &words[start + 1..];
    if program == "detnas" || program.ends_with("/detnas") || program.ends_with("tools/detnas.sh") {
        return Some(Invocation::Cli(rest.to_vec()));
    }
    if program != "cargo" || rest.first().map(String::as_str) != Some("run") {
        return None;
    }
    let (options, args) = match rest.iter().position(|w| w == "--") {
        Some(p) => (&rest[1..p], &rest[p + 1..]),
        None => (&rest[1..], &[][..]),
    };
    let value = |flag: &str| {
        options.iter().enumerate().find_map(|(i, w)| {
            if w == flag {
                Some(options.get(i + 1).cloned().unwrap_or_default())
            } else {
                w.strip_prefix(flag).and_then(|v| v.strip_prefix('=')).map(String::from)
            }
        })
    };
    if let Some(name) = value("--example") {
        return Some(Invocation::Example(name));
    }
    match value("--bin") {
        Some(bin) if bin != "detnas" => None,
        _ => Some(Invocation::Cli(args.to_vec())),
    }
}

/// `detnas <path> --help`, run once per subcommand path.
#[derive(Default)]
struct Cli {
    helps: HashMap<Vec<String>, Option<String>>,
}

impl Cli {
    fn help(&mut self, path: &[String]) -> Option<String> {
        self.helps
            .entry(path.to_vec())
            .or_insert_with(|| {
                let out = Command::new(env!("CARGO_BIN_EXE_detnas"))
                    .args(path)
                    .arg("--help")
                    .output()
                    .expect("detnas binary runs");
                out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            })
            .clone()
    }

    /// Checks one documented invocation's arguments: each word before the first flag descends
    /// into a subcommand while the current command has subcommands (in inline code, `a|b` names
    /// alternatives: each must exist), then every `--flag` must appear in the `--help` of the
    /// command reached (of one alternative at least).
    fn check(&mut self, args: &[String], alternatives: bool) -> Result<(), String> {
        let mut path: Vec<String> = Vec::new();
        let mut i = 0;
        let leaves: Vec<Vec<String>> = loop {
            let help = self.help(&path).ok_or_else(|| format!("`{}` fails", shown(&path, "--help")))?;
            let subcommands = subcommands(&help);
            let Some(word) = args.get(i) else { break vec![path] };
            if subcommands.is_empty() || word.starts_with('-') || is_placeholder(word) {
                break vec![path];
            }
            let names: Vec<&str> = if alternatives { word.split('|').collect() } else { vec![word] };
            for name in &names {
                if !subcommands.iter().any(|s| s == name) {
                    return Err(format!(
                        "`{}` has no subcommand `{name}` (it has: {})",
                        shown(&path, ""),
                        subcommands.join(", ")
                    ));
                }
            }
            i += 1;
            if names.len() > 1 {
                break names.iter().map(|n| path.iter().cloned().chain([n.to_string()]).collect()).collect();
            }
            path.push(word.clone());
        };
        let mut helps = Vec::new();
        for leaf in &leaves {
            helps.push(self.help(leaf).ok_or_else(|| format!("`{}` fails", shown(leaf, "--help")))?);
        }
        let bad: Vec<String> =
            flags(&args[i..]).into_iter().filter(|f| !helps.iter().any(|h| has_flag(h, f))).collect();
        if bad.is_empty() {
            Ok(())
        } else {
            let leaves: Vec<String> = leaves.iter().map(|l| format!("`{}`", shown(l, "--help"))).collect();
            Err(format!("{} not in {}", bad.join(", "), leaves.join(" / ")))
        }
    }
}

fn shown(path: &[String], tail: &str) -> String {
    ["detnas"]
        .into_iter()
        .chain(path.iter().map(String::as_str))
        .chain([tail])
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end()
        .to_string()
}

/// Subcommand names listed under `Commands:` in a clap help text (`help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// A word standing for something (`MODEL`, `<command>`, `...`), not a subcommand name.
fn is_placeholder(word: &str) -> bool {
    word.starts_with('<')
        || word.contains("...")
        || word.contains('…')
        || word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

/// The `--long-flags` among `words`, up to a bare `--` (`[--json]`, `(--dt`, `--out=x` included).
fn flags(words: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for word in words {
        if word == "--" {
            break;
        }
        let word = word.trim_start_matches(['[', '(']);
        let word = word.split('=').next().unwrap_or_default();
        let word = word.trim_end_matches([']', ')', ',', ';', '|']);
        if let Some(name) = word.strip_prefix("--")
            && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !found.iter().any(|f| f == word)
        {
            found.push(word.to_string());
        }
    }
    found
}

/// Whether `flag` appears in `help` as a whole word (`--seed` is not found in `--seeds`).
fn has_flag(help: &str, flag: &str) -> bool {
    let flag_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
    help.match_indices(flag).any(|(i, _)| {
        !help[..i].chars().next_back().is_some_and(flag_char)
            && !help[i + flag.len()..].chars().next().is_some_and(flag_char)
    })
}

#[test]
fn documented_commands_match_the_cli() {
    let mut cli = Cli::default();
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for (file, text) in documents() {
        let (blocks, prose) = split_fences(&text);
        // (line, shown text, arguments, whether `a|b` are alternatives)
        let mut invocations = Vec::new();
        for block in &blocks {
            for (line, command) in shell_commands(block) {
                for words in shell_segments(&command) {
                    invocations.extend(invocation(&words).map(|inv| (line, command.clone(), inv, false)));
                }
            }
        }
        for (line, span) in code_spans(&prose) {
            let words: Vec<String> = span.replace("\\|", "|").split_whitespace().map(String::from).collect();
            invocations.extend(invocation(&words).map(|inv| (line, span.clone(), inv, true)));
        }
        for (line, command, inv, alternatives) in invocations {
            checked += 1;
            let outcome = match inv {
                Invocation::Cli(args) => cli.check(&args, alternatives),
                Invocation::Example(name) if root().join(format!("examples/{name}.rs")).is_file() => Ok(()),
                Invocation::Example(name) => Err(format!("no examples/{name}.rs")),
            };
            if let Err(problem) = outcome {
                mismatches.push(format!("{file}:{line}: `{command}`: {problem}"));
            }
        }
    }
    assert!(checked >= 40, "only {checked} documented commands found: is the extraction broken?");
    assert!(
        mismatches.is_empty(),
        "{} documented commands do not match the CLI:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// GitHub's anchor of a heading: lower case, punctuation removed, spaces as hyphens (a repeated
/// heading gets `-1`, `-2`, ...).
fn anchors(text: &str) -> Vec<String> {
    let (_, prose) = split_fences(text);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = Vec::new();
    for line in &prose {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let title = line[hashes..].trim().trim_end_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|&c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        anchors.push(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    anchors
}

#[test]
fn relative_links_resolve() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for (file, text) in documents() {
        let dir = Path::new(&file).parent().unwrap().to_path_buf();
        let (_, prose) = split_fences(&text);
        for (n, line) in prose.iter().enumerate() {
            for (i, _) in line.match_indices("](") {
                let rest = &line[i + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = rest[..end].split_whitespace().next().unwrap_or("").trim_matches(['<', '>']);
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let resolved = if path.is_empty() { root().join(&file) } else { root().join(&dir).join(path) };
                if !resolved.exists() {
                    broken.push(format!("{file}:{}: `{target}`: no such file", n + 1));
                    continue;
                }
                if anchor.is_empty() || resolved.extension().is_none_or(|e| e != "md") {
                    continue;
                }
                let linked = std::fs::read_to_string(&resolved).unwrap();
                if !anchors(&linked).iter().any(|a| a == anchor) {
                    broken.push(format!("{file}:{}: `{target}`: no heading with anchor `#{anchor}`", n + 1));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} relative links found: is the extraction broken?");
    assert!(broken.is_empty(), "{} broken links:\n{}", broken.len(), broken.join("\n"));
}

#[test]
fn files_named_in_the_docs_exist() {
    let path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    let mut missing = Vec::new();
    let mut tools = 0;
    for (file, text) in documents() {
        for (n, line) in text.lines().enumerate() {
            for folder in CHECKED_FOLDERS {
                for (i, _) in line.match_indices(folder) {
                    if line[..i].chars().next_back().is_some_and(path_char) {
                        continue; // part of a longer path (`../tools/`, `runs/x/models/`)
                    }
                    let len = line[i..].find(|c: char| !path_char(c)).unwrap_or(line.len() - i);
                    if line[i + len..].starts_with(['*', '<']) {
                        continue; // a pattern (`crates/*/tests/fuzz.rs`)
                    }
                    let path = line[i..i + len].trim_end_matches('.');
                    tools += usize::from(folder == "tools/");
                    if !root().join(path).exists() {
                        missing.push(format!("{file}:{}: {path}", n + 1));
                    }
                }
            }
        }
    }
    assert!(tools >= 10, "only {tools} tools/ paths found: is the extraction broken?");
    assert!(missing.is_empty(), "{} files named in the docs do not exist:\n{}", missing.len(), missing.join("\n"));
}

#[test]
fn readme_is_a_front_page_and_summary_lists_every_chapter() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, at most {README_MAX_LINES}: move details to docs/"
    );
    let summary = std::fs::read_to_string(root().join("docs/SUMMARY.md")).expect("docs/SUMMARY.md (mdBook)");
    let unlisted: Vec<String> = documents()
        .into_iter()
        .filter_map(|(name, _)| name.strip_prefix("docs/").map(String::from))
        .filter(|name| name != "SUMMARY.md" && !summary.contains(&format!("]({name})")))
        .collect();
    assert!(unlisted.is_empty(), "chapters missing from docs/SUMMARY.md: {unlisted:?}");
}

#[test]
fn the_cli_check_catches_mismatches() {
    let mut cli = Cli::default();
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(cli.check(&words("arch info --arch coco-fpn-300m [--json]"), false), Ok(()));
    assert_eq!(cli.check(&words("train retinanet|det-supernet --config c.toml"), true), Ok(()));
    let err = cli.check(&words("detect m.onnx in --out o --no-such-flag --conf 0.3"), false).unwrap_err();
    assert!(err.contains("--no-such-flag") && !err.contains("--conf"), "{err}");
    let err = cli.check(&words("trian retinanet"), false).unwrap_err();
    assert!(err.contains("no subcommand `trian`"), "{err}");
    let err = cli.check(&words("train retinanet|nope"), true).unwrap_err();
    assert!(err.contains("no subcommand `nope`"), "{err}");
}

#[test]
fn shell_parsing() {
    let segments = shell_segments(r#"A=1 detnas eval --gt "a b.json" 2>&1 | head -1 && echo 'x # y' # --not-a-flag"#);
    let words: Vec<Vec<&str>> = segments.iter().map(|s| s.iter().map(String::as_str).collect()).collect();
    assert_eq!(words, [vec!["A=1", "detnas", "eval", "--gt", "a b.json"], vec!["head", "-1"], vec!["echo", "x # y"]]);
    let block = Block {
        lang: "console".into(),
        lines: vec![(1, "$ detnas arch info \\".into()), (2, "    --arch x".into()), (3, "output --x".into())],
    };
    assert_eq!(shell_commands(&block), [(1, "detnas arch info --arch x".to_string())]);
    let spans = code_spans(&["a `detnas".into(), "search` and ``x ` y``".into()]);
    assert_eq!(spans, [(1, "detnas search".to_string()), (2, "x ` y".to_string())]);
    assert_eq!(
        flags(&["[--json]".into(), "(--dt".into(), "--out=x".into(), "--".into(), "--late".into()]),
        ["--json", "--dt", "--out"]
    );
    assert!(has_flag("  --seed <SEED>", "--seed") && !has_flag("  --seeds <N>", "--seed"));
    assert!(matches!(
        invocation(&["cargo".into(), "run".into(), "--example".into(), "serve".into(), "--".into()]),
        Some(Invocation::Example(n)) if n == "serve"
    ));
}
