"""Stage 2 of Diff-Cleanse: remove a detected backdoor (docs/design.md section 3).

- :mod:`hfaudit.remove.importance`: which channels carry the backdoor (Taylor importance over the
  coupled channel groups torch-pruning finds);
- :mod:`hfaudit.remove.prune`: zero the most backdoor-tied channels in every coupled layer (soft
  pruning: shapes unchanged, so stock diffusers still loads the model) and keep them zero;
- :mod:`hfaudit.remove.finetune`: the dual-loss fine-tuning that restores benign quality and breaks
  the trigger;
- :mod:`hfaudit.remove.verify`: ASR, MSE, SSIM and fidelity before and after.

``hfaudit.cleaning.clean`` (``hfaudit.clean``) runs them end to end.
"""
