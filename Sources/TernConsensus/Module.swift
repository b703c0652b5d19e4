/// Placeholder so the target builds until its code lands; see docs/ARCHITECTURE.md.
