"""Imported first by the trial fork server (only there, see trainer/worker.py PRELOAD): the server
dies with the driver that started it, and its trials die with it (each sets the same signal), so
a SIGKILLed driver leaves no trial training on."""

from trainer.worker import die_with_parent

die_with_parent()
