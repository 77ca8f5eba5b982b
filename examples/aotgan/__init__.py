"""AOT-GAN-style reference generator and discriminator, and the SCAT retrofit of its trainer."""
