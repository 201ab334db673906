"""SQLAlchemy models and migrations, SigMF data files, archive streaming and the disk quota."""
