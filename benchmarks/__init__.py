"""Benchmarks of hfaudit: the backdoor trainers, the anchors' detection protocols, and the scripts that
measure the figures the README quotes. Not part of the installed package (see ``benchmarks/README.md``)."""
