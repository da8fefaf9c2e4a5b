"""JSON Schemas of every lpb file; a package only so that installed copies can find them."""
