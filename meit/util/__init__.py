"""Small helpers every layer uses: the one atomic write (`atomic`), user-facing errors (`errors`), cache-build
locks (`locks`) and the name -> factory registry (`registry`)."""
