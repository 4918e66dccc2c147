"""Everything train needs below the stage: trainer build, epoch loop, scoring, resume, refit, auto rules."""
