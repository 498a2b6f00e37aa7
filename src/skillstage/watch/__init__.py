"""The watcher that closes the loop: automated rollback triggers, the watch pass that acts on
them, alert episodes, holds, the kill switch and the failure report."""
