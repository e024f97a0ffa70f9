# Where the corpora live. LibriSpeech: the directory that holds (or will hold, after download)
# LibriSpeech/<part>/; override with `export LIBRISPEECH=/path` or local/data.sh --librispeech_dir.
LIBRISPEECH=${LIBRISPEECH:-downloads}
