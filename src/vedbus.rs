//! vedbus (placeholder: filled in by its issue)
