"""Training: losses, the trainer loop, transfer stages."""
