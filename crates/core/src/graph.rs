//! Placeholder for the dependency graph (issue: health and order).
