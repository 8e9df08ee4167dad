"""Bounces: VERP return paths, inbound DSNs, the suppression list, DSNs we send, compliance BCC.

How a bounce finds its message: every outbound message leaves with its own VERP return path
(`verp`). A DSN arriving there is handled by the pipeline destination (`destination`), which
records it (`suppression`): a permanent failure puts the recipient on the suppression list, so
later mail to it is stored as "suppressed" and never sent, until `mailcase bounces clear`.

The hooks the delivery engine calls: `verp.return_path_for` (MAIL FROM of an attempt) and
`notify.on_permanent_failure` (a DSN to the sender). `hook.enqueue_hook(settings)` makes the
`EnqueueHook` that marks suppressed recipients and adds the compliance BCC addresses. The
composition root (`mailcase.platform.build_outbound`) wires them (nothing is registered by
importing these modules). Tables: `models`; the `mailcase bounces` commands: `commands`.
"""
