"""Any board BrainFlow supports (its synthetic board for demos, an OYMotion gForcePro,
an OpenBCI board); needs the optional [sensors] extra, imported when the source is made."""

from __future__ import annotations

import contextlib
import time

import numpy as np

from livegen.errors import LivegenError
from livegen.inputs.base import InputStats
from livegen.inputs.emg.config import EmgInputConfig
from livegen.inputs.emg.source import READ_TIMEOUT_S


class BrainFlowSource:
    """A BrainFlow board: its EMG channels (or its first channels when it names none)."""

    def __init__(self, config: EmgInputConfig, stats: InputStats) -> None:
        try:
            from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams
        except ImportError:
            raise LivegenError("protocol 'brainflow' needs BrainFlow: pip install "
                               "'livegen[sensors]'") from None
        self.config = config
        board = config.board
        if board.isdigit():
            self.board_id = int(board)
        else:
            name = board.upper().replace("-", "_")
            name = name if name.endswith("_BOARD") else name + "_BOARD"
            if name not in BoardIds.__members__:
                raise LivegenError(f"BrainFlow knows no board {board!r}; use a name such as "
                                   "'synthetic', 'cyton', 'gforce_pro' or a numeric board id")
            self.board_id = BoardIds[name].value
        params = BrainFlowInputParams()
        params.serial_port = config.port
        self.board = BoardShim(self.board_id, params)
        self.sample_rate = config.sample_rate or float(BoardShim.get_sampling_rate(self.board_id))
        try:
            rows = BoardShim.get_emg_channels(self.board_id)
        except Exception:  # BrainFlow raises its own error for boards without EMG rows
            rows = BoardShim.get_exg_channels(self.board_id)
        self.rows = list(rows)[:config.channels]
        BoardShim.disable_board_logger()

    def open(self) -> str:
        self.board.prepare_session()
        self.board.start_stream()
        return f"BrainFlow board {self.config.board} ({self.board_id})"

    def read(self) -> np.ndarray:
        time.sleep(READ_TIMEOUT_S)  # BrainFlow buffers in its own thread; collect in batches
        data = self.board.get_board_data()
        return np.asarray(data[self.rows], float).T

    def close(self) -> None:
        from brainflow.board_shim import BrainFlowError

        # Either may fail when prepare_session did: then there is nothing to stop.
        with contextlib.suppress(BrainFlowError):
            self.board.stop_stream()
        with contextlib.suppress(BrainFlowError):
            self.board.release_session()
