"""streamrec: real-time recognition of musical instruments in live and recorded video.

Audio CNNs on log-mel spectrograms and a frame CNN at 1 fps, combined by a late-fusion network
(Slizovskaia, Gomez and Haro, ICMR 2017).
"""

__version__ = "0.1.0"
