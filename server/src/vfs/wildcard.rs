//! Windows name patterns (MS-FSA 2.1.4.4, what `FsRtlIsNameInExpression`
//! does): `*` and `?`, and the DOS forms `<` (DOS_STAR), `>` (DOS_QM) and
//! `"` (DOS_DOT), compared case-insensitively by UTF-16 code unit.
//!
//! The matcher runs the pattern as a nondeterministic automaton whose states
//! are the positions in the pattern, one step per name unit: a name of n
//! units against a pattern of m units costs at most n·m bit operations, with
//! no recursion and no backtracking, and the state set is a fixed bitset
//! (a pattern is at most [`MAX_PATTERN_UNITS`] long, as any name component).
//!
//! State `j` means "the next pattern unit to match is `j`"; state `m` (the
//! pattern's length) is the accepting one. Per name unit `c`:
//! - first the zero-width moves, in ascending order (they only go from `j` to
//!   `j + 1`): past `*` and `<` always, past `>` when `c` is a period, and at
//!   the end of the name also past `>` and `"`;
//! - then the moves that consume `c`: `*` stays, `<` stays unless `c` is the
//!   name's last period, which it consumes as its final unit (`j + 1`); `>`
//!   and `?` take any unit but `>` never a period; `"` takes only a period;
//!   any other unit takes an equal one (after case folding).
//!
//! One more rule reproduces the algorithm's behaviour on a trailing period:
//! when the zero-width moves reach the end of the pattern while `c` is being
//! matched, the end is kept as if `c` had been consumed (so `a>` matches
//! `a.`). It can only ever accept when `c` is the last unit of the name.

use crate::wire::status::NtStatus;

/// The longest pattern we accept, in UTF-16 units: a pattern must be a valid
/// name component (MS-FSA 2.1.5.6.3), and a component is at most 255 units
/// (MS-FSCC 2.1.5).
pub const MAX_PATTERN_UNITS: usize = 255;

const WORDS: usize = (MAX_PATTERN_UNITS + 1).div_ceil(64);
type Bits = [u64; WORDS];

const STAR: u16 = b'*' as u16;
const QM: u16 = b'?' as u16;
const DOS_STAR: u16 = b'<' as u16;
const DOS_QM: u16 = b'>' as u16;
const DOS_DOT: u16 = b'"' as u16;
const DOT: u16 = b'.' as u16;

/// Whether a UTF-16 unit is one of the five wildcard characters (MS-FSA 2.1.4.3).
fn is_wild(u: u16) -> bool {
    matches!(u, STAR | QM | DOS_STAR | DOS_QM | DOS_DOT)
}

/// Case folding of one UTF-16 unit the way Windows' upcase table does it:
/// one unit to one unit; a unit whose upper case is several characters, or
/// lies outside the BMP, and every surrogate, stays as it is.
pub fn fold_unit(u: u16) -> u16 {
    let Some(c) = char::from_u32(u32::from(u)) else { return u };
    if c.is_ascii() {
        return c.to_ascii_uppercase() as u16;
    }
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(x), None) if (x as u32) <= 0xFFFF => x as u32 as u16,
        _ => u,
    }
}

/// The name as folded UTF-16 units.
fn fold_name(name: &str, out: &mut Vec<u16>) {
    out.clear();
    out.extend(name.encode_utf16().map(fold_unit));
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `*` or `*.*`: every (non-empty) name.
    All,
    /// No wildcard: the whole name compares equal.
    Exact,
    /// `*` then no wildcard: the name ends with the rest.
    Suffix,
    /// Anything else: the automaton.
    General,
}

/// A pattern checked and folded once, then matched against many names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    units: Vec<u16>,
    kind: Kind,
}

impl Pattern {
    /// Checks a QUERY_DIRECTORY pattern (an empty one means `*`): at most
    /// [`MAX_PATTERN_UNITS`] UTF-16 units, no path separator, no NUL;
    /// STATUS_OBJECT_NAME_INVALID otherwise, as MS-FSA 2.1.5.6.3 says for a
    /// pattern that is not a valid name component.
    pub fn new(pattern: &str) -> Result<Pattern, NtStatus> {
        let units: Vec<u16> = pattern.encode_utf16().map(fold_unit).collect();
        if units.len() > MAX_PATTERN_UNITS || units.iter().any(|&u| u == 0 || u == u16::from(b'\\') || u == u16::from(b'/')) {
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
        if units.is_empty() || units == [STAR] || units == [STAR, DOT, STAR] {
            return Ok(Pattern { units: vec![STAR], kind: Kind::All });
        }
        let kind = if !units.iter().any(|&u| is_wild(u)) {
            Kind::Exact
        } else if units[0] == STAR && !units[1..].iter().any(|&u| is_wild(u)) {
            Kind::Suffix
        } else {
            Kind::General
        };
        Ok(Pattern { units, kind })
    }

    /// Whether the pattern has any wildcard at all.
    pub fn has_wildcards(&self) -> bool {
        self.kind != Kind::Exact
    }

    /// Whether `name` matches (an empty name never does).
    pub fn matches(&self, name: &str) -> bool {
        let mut buf = Vec::with_capacity(name.len());
        fold_name(name, &mut buf);
        self.matches_folded(&buf)
    }

    /// As [`Pattern::matches`], reusing the caller's buffer for the folded name.
    pub fn matches_with(&self, name: &str, scratch: &mut Vec<u16>) -> bool {
        fold_name(name, scratch);
        self.matches_folded(scratch)
    }

    fn matches_folded(&self, name: &[u16]) -> bool {
        if name.is_empty() {
            return false;
        }
        match self.kind {
            Kind::All => true,
            Kind::Exact => name == self.units.as_slice(),
            Kind::Suffix => name.ends_with(&self.units[1..]),
            Kind::General => self.run(name),
        }
    }

    /// The automaton (see the module comment). `p.len() <= MAX_PATTERN_UNITS`
    /// so every state fits in [`Bits`].
    fn run(&self, name: &[u16]) -> bool {
        let p = self.units.as_slice();
        let m = p.len();
        let last_dot = name.iter().rposition(|&u| u == DOT);
        let mut cur: Bits = [0; WORDS];
        set(&mut cur, 0);
        for (i, &c) in name.iter().enumerate() {
            let ends_by_eps = close(p, &mut cur, Some(c));
            let mut next: Bits = [0; WORDS];
            let mut from = 0;
            while let Some(j) = next_set(&cur, from) {
                if j >= m {
                    break;
                }
                match p[j] {
                    STAR => set(&mut next, j),
                    DOS_STAR if c == DOT && last_dot == Some(i) => set(&mut next, j + 1),
                    DOS_STAR => set(&mut next, j),
                    DOS_QM if c != DOT => set(&mut next, j + 1),
                    DOS_QM => {}
                    DOS_DOT if c == DOT => set(&mut next, j + 1),
                    DOS_DOT => {}
                    QM => set(&mut next, j + 1),
                    lit if lit == c => set(&mut next, j + 1),
                    _ => {}
                }
                from = j + 1;
            }
            if ends_by_eps {
                set(&mut next, m);
            }
            if next == [0; WORDS] {
                return false;
            }
            cur = next;
        }
        close(p, &mut cur, None);
        get(&cur, m)
    }
}

/// Adds the zero-width moves to `s`, for name unit `c` (`None` at the end of
/// the name); returns whether one of them reached the end of the pattern.
fn close(p: &[u16], s: &mut Bits, c: Option<u16>) -> bool {
    let m = p.len();
    let mut reached_end = false;
    let mut from = 0;
    while let Some(j) = next_set(s, from) {
        if j >= m {
            break;
        }
        let eps = match p[j] {
            STAR | DOS_STAR => true,
            DOS_QM => c.is_none_or(|c| c == DOT),
            DOS_DOT => c.is_none(),
            _ => false,
        };
        if eps {
            set(s, j + 1);
            reached_end |= j + 1 == m;
        }
        from = j + 1;
    }
    reached_end
}

fn set(s: &mut Bits, i: usize) {
    s[i / 64] |= 1 << (i % 64);
}

fn get(s: &Bits, i: usize) -> bool {
    s[i / 64] & (1 << (i % 64)) != 0
}

/// The lowest set bit at or after `from`.
fn next_set(s: &Bits, from: usize) -> Option<usize> {
    let mut w = from / 64;
    if w >= WORDS {
        return None;
    }
    let mut word = s[w] & (!0u64 << (from % 64));
    loop {
        if word != 0 {
            return Some(w * 64 + word.trailing_zeros() as usize);
        }
        w += 1;
        if w == WORDS {
            return None;
        }
        word = s[w];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::new(p).unwrap().matches(n)
    }

    #[test]
    fn plain_wildcards() {
        assert!(m("*", "anything"));
        assert!(m("", "anything"));
        assert!(m("*.*", "noextension"));
        assert!(m("*.txt", "A.TXT"));
        assert!(!m("*.txt", "a.txt.bak"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("exact", "Exact"));
        assert!(!m("exact", "exactly"));
        assert!(m("*foo", "nofoo") && m("*foo", "FOO") && !m("*foo", "fo"));
        assert!(m("a*b*c", "aXXbYYc") && !m("a*b*c", "aXXbYY"));
        assert!(m("*a*", "bab") && !m("*a*", "bbb"));
        assert!(!m(".", "foo.txt") && !m(".", "footxt"));
        // An empty name matches nothing, not even "*".
        assert!(!m("*", ""));
        // Case folding is per UTF-16 unit, one to one (ß has no single upper case).
        assert!(m("STRAßE", "straße") && !m("STRASSE", "straße"));
        assert!(m("éte*", "ÉTE.txt"));
        // '?' takes one UTF-16 unit: a character outside the BMP is two.
        assert!(m("??", "😀") && !m("?", "😀"));
    }

    #[test]
    fn dos_wildcards() {
        // DOS_STAR: any run that does not swallow the last period, which it may
        // consume as its final unit.
        assert!(m("<.txt", "a.b.txt"));
        assert!(m("<", "a") && m("<", "a.") && !m("<", "a. ") && !m("<", "a.b"));
        assert!(m("foo<", "foo.") && !m("foo<", "foo. "));
        assert!(m("<<", "a.b") && m("<<", "a.b.c"));
        assert!(!m("<\"", "a.b.c"));
        assert!(!m("<.", "a") && m("<.", "a.") && !m("<.", "a.b"));
        // "<\"*" is what DOS "*.*" becomes.
        for n in ["footxt", "foo.txt", ".foo", "foo."] {
            assert!(m("<\"*", n), "{n}");
        }
        // DOS_QM and DOS_DOT: ">\">" is DOS "?.?".
        for (n, want) in [("a.b", true), ("a.", true), ("a", true), ("ab", false), ("a.bc", false), ("ab.c", false)] {
            assert_eq!(m(">\">", n), want, "{n}");
        }
        for (p, n, want) in [
            (">>\">>", "a.b", true),
            (">>\"\">>", "a.b", false),
            (">>\">>", "a.bc", true),
            (">>\">>", "ab.ba", true),
            (">>\">>", "ab.", true),
            (">>\"\"\">>", "ab.", true),
            (">>b\">>", "ab.ba", false),
            ("a>>\">>", "ab.ba", true),
            (">>\">>a", "ab.ba", false),
            (">>\"b>>", "ab.ba", true),
            (">>\"b>>", "ab.b", true),
            (">>b.>>", "ab.ba", false),
            ("a>>.>>", "ab.ba", true),
            (">>.>>a", "ab.ba", false),
            (">>.b>>", "ab.ba", true),
            (">>.b>>", "ab.b", true),
            (">>\">>\">>", "ab.ba", true),
            (">>\">>\">>", "abba", false),
            (">>\"ab\"ba", "ab.ba", false),
            ("ab\"ba\">>", "ab.ba", true),
            ("ab\">>\"ba", "ab.ba", false),
            (">>\">>\">>>", "ab.ba.cab", true),
            ("a>>\"b>>\"c>>>", "ab.ba.cab", true),
            // A trailing period met by a DOS_QM that then ends the pattern.
            ("a>", "a.", true),
            ("a>", "a.b", false),
        ] {
            assert_eq!(m(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn patterns_are_checked() {
        assert_eq!(Pattern::new(&"a".repeat(255)).map(|p| p.has_wildcards()), Ok(false));
        assert_eq!(Pattern::new(&"a".repeat(256)), Err(NtStatus::OBJECT_NAME_INVALID));
        assert_eq!(Pattern::new(&"*".repeat(30000)), Err(NtStatus::OBJECT_NAME_INVALID));
        // The cap counts UTF-16 units: 128 characters outside the BMP are 256.
        assert!(Pattern::new(&"😀".repeat(127)).is_ok());
        assert_eq!(Pattern::new(&"😀".repeat(128)), Err(NtStatus::OBJECT_NAME_INVALID));
        for bad in ["a\\b", "a/b", "a\0"] {
            assert_eq!(Pattern::new(bad), Err(NtStatus::OBJECT_NAME_INVALID), "{bad:?}");
        }
    }

    /// The pattern from the issue that used to backtrack exponentially, and
    /// the longest patterns against the longest names: each is one pass.
    #[test]
    fn hostile_patterns_are_quick() {
        let name = "a".repeat(255);
        assert!(!m("*a*a*a*a*a*a*a*a*a*b", &"a".repeat(60)));
        let p = "*a".repeat(127);
        assert!(m(&p, &name));
        assert!(!m(&format!("{}b", &p[..254]), &name));
        assert!(m(&"*".repeat(255), &name));
        assert!(m(&"<".repeat(255), &name));
        assert!(!m(&format!("{}b", "<a".repeat(127)), &name));
        assert!(!m(&">".repeat(254), &name));
        assert!(m(&">".repeat(255), &name));
        let start = std::time::Instant::now();
        for _ in 0..100 {
            assert!(!m(&format!("{}b", "*a".repeat(127)), &name));
        }
        // 100 worst-case matches of 255 x 255 are far below a second even
        // unoptimised; the old matcher would not finish this at all.
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }

    /// The automaton agrees with a direct reading of the rules (a memoised
    /// table over (name position, pattern position), quadratic) on random
    /// short inputs over an alphabet that hits every case.
    #[test]
    fn agrees_with_reference() {
        fn reference(p: &[u16], n: &[u16]) -> bool {
            let last_dot = n.iter().rposition(|&u| u == DOT);
            // ok[i][j]: name[i..] matches pattern[j..]; the trailing-period
            // rule is handled by accepting at (i, m) when i + 1 == n.len()
            // and name[i] was not consumed but skipped by zero-width moves.
            let (nl, pl) = (n.len(), p.len());
            let mut ok = vec![vec![false; pl + 1]; nl + 1];
            for i in (0..=nl).rev() {
                for j in (0..=pl).rev() {
                    let r = if j == pl {
                        i == nl
                    } else if i == nl {
                        matches!(p[j], STAR | DOS_STAR | DOS_QM | DOS_DOT) && ok[i][j + 1]
                    } else {
                        let c = n[i];
                        let eps = match p[j] {
                            STAR | DOS_STAR => true,
                            DOS_QM => c == DOT,
                            _ => false,
                        };
                        let trailing = eps && j + 1 == pl && i + 1 == nl;
                        let consume = match p[j] {
                            STAR => ok[i + 1][j],
                            DOS_STAR if c == DOT && last_dot == Some(i) => ok[i + 1][j + 1],
                            DOS_STAR => ok[i + 1][j],
                            DOS_QM => c != DOT && ok[i + 1][j + 1],
                            DOS_DOT => c == DOT && ok[i + 1][j + 1],
                            QM => ok[i + 1][j + 1],
                            lit => lit == c && ok[i + 1][j + 1],
                        };
                        (eps && ok[i][j + 1]) || trailing || consume
                    };
                    ok[i][j] = r;
                }
            }
            ok[0][0]
        }
        let alphabet = ['a', 'b', '.', '*', '?', '<', '>', '"'];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |k: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % k as u64) as usize
        };
        for _ in 0..20000 {
            let p: String = (0..1 + rnd(6)).map(|_| alphabet[rnd(8)]).collect();
            let n: String = (0..1 + rnd(6)).map(|_| alphabet[rnd(3)]).collect();
            let pat = Pattern::new(&p).unwrap();
            let pu: Vec<u16> = p.encode_utf16().map(fold_unit).collect();
            let nu: Vec<u16> = n.encode_utf16().map(fold_unit).collect();
            let want = if pat.kind == Kind::All { true } else { reference(&pu, &nu) };
            assert_eq!(pat.matches(&n), want, "{p:?} {n:?}");
        }
    }
}
