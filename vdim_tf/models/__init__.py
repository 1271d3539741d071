"""Encoder, contrastive heads, InfoNCE loss and the VDIM model."""
