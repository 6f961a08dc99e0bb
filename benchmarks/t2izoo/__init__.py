"""A text-to-image and latent-diffusion backdoor zoo trained on CPU (see ``benchmarks.t2izoo.build``)."""
