"""The schema's revisions, one file each, in order: 0001, 0002, ... (see the README,
"Upgrading", for how to write one)."""
