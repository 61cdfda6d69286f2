"""reid_tf.train's command with a hard crash at a known step, for the SIGKILL-then-resume test
(deterministic, where a test polling for a checkpoint and then killing the process would race
against a fast machine):

    python -m tests.killed_training STEP [reid_tf.train's flags ...]

The library knows nothing of it: this wrapper adds its callback to those reid_tf.train passes to
PairTrainer.fit, last, so that the crash comes after that step's checkpoint, if any.
"""
import os
import signal
import sys

from reid_tf import cli, train


def kill_at(step: int) -> None:
    """Make every PairTrainer.fit of this process SIGKILL it once the global step reaches `step`:
    a hard crash, no clean-up, no save."""
    import keras  # after reid_tf: its quiet TensorFlow start-up, as the command has

    from reid_tf.pair_trainer import PairTrainer

    class KillAtStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) >= step:
                os.kill(os.getpid(), signal.SIGKILL)

    fit = PairTrainer.fit

    def fit_then_crash(self, *args, callbacks=(), **kwargs):
        return fit(self, *args, callbacks=[*(callbacks or ()), KillAtStep()], **kwargs)

    PairTrainer.fit = fit_then_crash


if __name__ == "__main__":
    kill_at(int(sys.argv.pop(1)))
    train.define_flags()
    cli.run(train.main)
