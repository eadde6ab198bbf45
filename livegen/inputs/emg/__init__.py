"""The EMG input: muscle activity of eight (or so) channels, each normalised to 0..1.

Sources (config `protocol`):
- myo-bled112: a Myo armband through a BLED112 USB dongle, which speaks Bluegiga's BGAPI
  over a serial port. livegen scans for the Myo (or connects to `myo_address`), subscribes
  to its four EMG characteristics and sets the EMG mode: 8 channels of int8 at 200 Hz, two
  samples per notification.
- cyton: OpenBCI Cyton binary packets at 250 Hz: 0xA0, sample number, 8 x 24-bit signed
  big-endian channels, 6 aux bytes, a 0xCx footer; counts are scaled to microvolts.
- csv: text lines of numbers (an Arduino with MyoWare sensors), at `sample_rate`.
- brainflow: any board BrainFlow supports (its synthetic board for demos, an OYMotion
  gForcePro, an OpenBCI board); needs the optional [sensors] extra.

The signal chain, per channel: remove the DC offset (one-pole high-pass), rectify, take
the RMS or mean absolute value over a window, normalise by the performer's calibration
(rest level -> 0, maximum contraction -> 1, clipped). Values: ch0 .. ch{n-1} and total
(the mean of the channels). A reading leaves every 1 / rate_hz seconds of samples.

Bad bytes never stop the input: garbage, cut-off packets, NaN and samples beyond what the
source can produce (`SAMPLE_LIMIT`) are dropped and counted in `stats.dropped` before they
reach the filters; a sample that would still make a filter's state non-finite restarts that
state instead ('filter reset'), so no input can leave the chain poisoned. An unplugged port
(the serial read fails) or a silent one (`stall_s`) ends the run, and the supervisor reopens
the port with backoff.

One module per job:
    source.py           what a sample source is, what each protocol delivers, the serial port
    framing.py          packets cut out of a byte stream with garbage in it
    cyton.py            the Cyton's packets, their decoding, its source
    bgapi.py            the BLED112's BGAPI: packets, framing, a command/event client
    myo.py              the Myo over BGAPI
    csv_lines.py        text lines of numbers
    brainflow_board.py  a BrainFlow board
    envelope.py         plausible samples, DC removal, rectification, the windowed envelope
    calibration.py      rest and maximum per channel, read and written
    input.py            EmgInput: source, chain and calibration, in a thread of its own
    calibrate.py        `livegen calibrate emg`
"""
