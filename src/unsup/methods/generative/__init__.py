"""Generative models: a generator and a discriminator trained against each
other; the discriminator (or a learned inverse encoder) is the encoder the
probe measures. Shared nets and the adversarial step live in ``gan_nets``."""
