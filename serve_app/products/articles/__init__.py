"""Article images: one per placeholder of an article (source spec image-generation-storage-guide.md)."""
