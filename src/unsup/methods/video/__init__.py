"""Learning from video: predict frames (video-lstm, prednet) or future
representations (future-features) of unlabelled sequences; the frame encoder
is then probed on still images like any other encoder."""
