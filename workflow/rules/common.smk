# The run's Workflow (mopeft.plan.workflow): the config checked (schema with its defaults, then the
# membership checks naming a key), the cell grid, every rule's paths, flags, resources and code hash.
# The logic lives in that module, which the tests call directly; this file hands it to the rules.
# Shell quoting: every field of a rule's shell string is written `{...:q}`. The argument helpers
# return LISTS of words (flag, value, ...), which `:q` quotes one by one, so a config path with a
# space or a `;` reaches the command as one argument and never as shell syntax.
# Code reruns: a job's code is its `code` param (a content hash, mopeft.codedeps), not input files.

import sys

import mopeft.plan.workflow as mw

wf = mw.Workflow(
    config,
    schema=os.path.join(workflow.current_basedir, "../schemas/config.schema.yaml"),
)
if wf.grid.notes:  # one line: what of config/config.yaml's sections this run leaves out
    print(wf.grid.note_line(), file=sys.stderr)
if wf.plan_note:  # where the GPU jobs' resources come from
    print(wf.plan_note, file=sys.stderr)

RUN = wf.run
RAW = wf.raw
PREP = wf.prep
CELLS = mw.CELLS
DET = wf.det
EFF = wf.eff


wildcard_constraints:
    **wf.wildcard_constraints(),
