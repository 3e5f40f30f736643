//! Local accounts: names with NT hashes, looked up case-insensitively.

use std::collections::HashMap;

use zeroize::Zeroize;

use super::ntlm_crypto::nt_hash;

/// One account.
#[derive(Clone)]
pub struct UserEntry {
    name: String,
    nt_hash: [u8; 16],
}

impl UserEntry {
    /// The name as it was added.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// MD4(UTF-16LE(password)).
    pub fn nt_hash(&self) -> &[u8; 16] {
        &self.nt_hash
    }
}

impl std::fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for UserEntry {
    fn drop(&mut self) {
        self.nt_hash.zeroize();
    }
}

/// The accounts a server accepts.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    users: HashMap<String, UserEntry>,
}

fn key(name: &str) -> String {
    name.to_lowercase()
}

impl UserDb {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an account from its password.
    pub fn add_password(&mut self, name: &str, password: &str) {
        self.add_nt_hash(name, nt_hash(password));
    }

    /// Adds (or replaces) an account from its NT hash.
    pub fn add_nt_hash(&mut self, name: &str, hash: [u8; 16]) {
        self.users.insert(
            key(name),
            UserEntry {
                name: name.to_owned(),
                nt_hash: hash,
            },
        );
    }

    /// Finds an account, ignoring case.
    pub fn lookup(&self, name: &str) -> Option<&UserEntry> {
        self.users.get(&key(name))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case() {
        let mut db = UserDb::new();
        db.add_password("Alice", "pw");
        db.add_nt_hash("ÉRIC", [7; 16]);
        assert_eq!(db.lookup("aLiCe").map(UserEntry::name), Some("Alice"));
        assert_eq!(db.lookup("éric").map(|e| *e.nt_hash()), Some([7; 16]));
        assert!(db.lookup("bob").is_none());
        assert_eq!(
            db.lookup("ALICE").map(|e| *e.nt_hash()),
            Some(nt_hash("pw"))
        );
        assert_eq!(db.len(), 2);
    }
}
