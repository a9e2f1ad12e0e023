//! devices (placeholder: filled in by its issue)
