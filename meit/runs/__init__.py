"""Run directories: writing and loading a run (`rundir`), the one prediction path on a saved run (`predict`),
multi-seed parents (`seeds`) and the train-or-reuse step of the experiment drivers (`experiment`)."""
