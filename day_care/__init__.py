"""The built-in example day care; a package only so that installed copies can find it."""
