//! SQLite backend (placeholder: implemented in the store worktree).
