"""The audit: fresh workers check a stratified random sample of final labels, and the answers
measure precision, recall and NPV with exact and prediction-powered intervals (docs/audit.md).

:mod:`~lsun_crowd.audit.sample` draws and lays out the sample, :mod:`~lsun_crowd.audit.run` moves
its jobs and aggregates, :mod:`~lsun_crowd.audit.stats` holds the intervals.
"""
