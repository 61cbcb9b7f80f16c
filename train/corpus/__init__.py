"""The instrument video corpus built from the training sources of shared/DATA.md (`streamrec data build`)."""
