"""English instructions for the 50 Meta-World v3 tasks, written for this project (none ship with
Meta-World). Each task has a set of interchangeable phrasings; an episode gets one of them, drawn
from its env seed (:func:`instruction_for`), and the paraphrase objective treats the others of
the set as paraphrases (``info.json["instruction_sets"]``).

They name objects, not colours or left/right: goal markers and layouts are random per seed, and
colour words would have to be checked against every asset. Where the scene alone says where to
go (a goal marker for reach / push / pick-and-place), the instruction says "the target" / "the goal".
"""

from __future__ import annotations

import zlib

import numpy as np

from ...errors import UserError

INSTRUCTIONS: dict[str, list[str]] = {
    "assembly-v3": [
        "put the ring onto the peg",
        "pick up the nut and fit it over the peg",
        "slide the ring down onto the peg",
        "assemble the nut on the peg",
    ],
    "basketball-v3": [
        "put the ball in the hoop",
        "pick up the ball and dunk it into the basket",
        "score a basket with the ball",
        "drop the ball through the hoop",
    ],
    "bin-picking-v3": [
        "move the cube from one bin to the other",
        "pick the block out of its bin and put it in the empty bin",
        "transfer the cube into the other bin",
        "take the block from the full bin and place it in the empty one",
    ],
    "box-close-v3": [
        "close the box",
        "put the lid on the box",
        "pick up the lid and cover the box with it",
        "place the lid onto the box",
    ],
    "button-press-topdown-v3": [
        "press the button from above",
        "push the button down",
        "press down on the top of the button",
        "push the button straight down from the top",
    ],
    "button-press-topdown-wall-v3": [
        "press the button from above behind the wall",
        "reach over the wall and push the button down",
        "push down the button that is behind the wall",
        "press down on the button past the wall",
    ],
    "button-press-v3": [
        "press the button",
        "push the button in",
        "poke the button on the front of the box",
        "push the button forward until it clicks",
    ],
    "button-press-wall-v3": [
        "press the button behind the wall",
        "go around the wall and push the button in",
        "push in the button that is behind the wall",
        "get past the wall and press the button",
    ],
    "coffee-button-v3": [
        "press the button on the coffee machine",
        "push the coffee machine's button",
        "start the coffee machine",
        "hit the button on the espresso machine",
    ],
    "coffee-pull-v3": [
        "pull the mug away from the coffee machine",
        "take the cup out from under the coffee machine",
        "slide the mug back from the coffee machine",
        "move the cup away from the espresso machine",
    ],
    "coffee-push-v3": [
        "push the mug under the coffee machine",
        "slide the cup under the spout of the coffee machine",
        "put the mug beneath the coffee machine",
        "move the cup under the espresso machine",
    ],
    "dial-turn-v3": [
        "turn the dial",
        "rotate the knob around",
        "twist the dial half a turn",
        "spin the dial",
    ],
    "disassemble-v3": [
        "take the ring off the peg",
        "lift the nut off the peg",
        "pull the ring up and off the peg",
        "remove the nut from the peg",
    ],
    "door-close-v3": [
        "close the door",
        "shut the door",
        "swing the door closed",
        "push the door shut",
    ],
    "door-lock-v3": [
        "lock the door",
        "turn the lock on the door",
        "rotate the door lock to lock it",
        "turn the knob to lock the door",
    ],
    "door-open-v3": [
        "open the door",
        "pull the door open",
        "swing the door open by its handle",
        "grab the handle and open the door",
    ],
    "door-unlock-v3": [
        "unlock the door",
        "turn the lock on the door back",
        "rotate the door lock to unlock it",
        "turn the knob to unlock the door",
    ],
    "drawer-close-v3": [
        "close the drawer",
        "push the drawer shut",
        "slide the drawer in",
        "push the drawer closed",
    ],
    "drawer-open-v3": [
        "open the drawer",
        "pull the drawer open",
        "slide the drawer out",
        "pull out the drawer by its handle",
    ],
    "faucet-close-v3": [
        "turn off the faucet",
        "close the tap",
        "rotate the faucet handle to shut off the water",
        "turn the tap off",
    ],
    "faucet-open-v3": [
        "turn on the faucet",
        "open the tap",
        "rotate the faucet handle to let the water run",
        "turn the tap on",
    ],
    "hammer-v3": [
        "hammer the nail in",
        "pick up the hammer and drive the nail into the wall",
        "use the hammer to knock the nail in",
        "hit the nail with the hammer",
    ],
    "hand-insert-v3": [
        "put the gripper into the hole",
        "insert the hand into the hole in the table",
        "reach down into the hole",
        "move the gripper down into the hole",
    ],
    "handle-press-side-v3": [
        "press the handle down from the side",
        "push the side handle down",
        "press down on the handle from its side",
        "push the lever handle down sideways",
    ],
    "handle-press-v3": [
        "press the handle down",
        "push down on the handle",
        "press the handle all the way down",
        "push the handle downward",
    ],
    "handle-pull-side-v3": [
        "pull the handle up from the side",
        "lift the side handle up",
        "raise the handle from its side",
        "pull the lever handle up sideways",
    ],
    "handle-pull-v3": [
        "pull the handle up",
        "lift the handle",
        "raise the handle all the way up",
        "pull up on the handle",
    ],
    "lever-pull-v3": [
        "pull the lever up",
        "lift the lever",
        "raise the lever until it points up",
        "swing the lever upward",
    ],
    "peg-insert-side-v3": [
        "insert the peg into the hole from the side",
        "pick up the peg and push it into the hole in the box",
        "put the peg in the hole",
        "slide the peg sideways into the hole",
    ],
    "peg-unplug-side-v3": [
        "unplug the peg",
        "pull the peg out of the hole",
        "take the peg out of the box from the side",
        "slide the peg out sideways",
    ],
    "pick-out-of-hole-v3": [
        "pick the puck out of the hole",
        "lift the puck up out of the hole",
        "take the puck out of the hole and raise it to the target",
        "grab the puck from inside the hole and lift it out",
    ],
    "pick-place-v3": [
        "pick up the puck and place it at the target",
        "move the puck to the goal",
        "grab the puck and put it on the target",
        "lift the puck and set it down at the goal",
    ],
    "pick-place-wall-v3": [
        "pick up the puck and place it at the target behind the wall",
        "lift the puck over the wall and put it on the goal",
        "move the puck past the wall to the target",
        "carry the puck over the wall to the goal",
    ],
    "plate-slide-back-side-v3": [
        "slide the plate out of the cabinet from the side",
        "take the plate back out of the cabinet sideways",
        "pull the plate sideways out of the cabinet",
        "get the plate out of the cabinet from the side",
    ],
    "plate-slide-back-v3": [
        "slide the plate back out of the cabinet",
        "pull the plate out of the cabinet",
        "get the plate back from the cabinet",
        "take the plate out of the cabinet",
    ],
    "plate-slide-side-v3": [
        "slide the plate into the cabinet from the side",
        "push the plate sideways into the cabinet",
        "put the plate in the cabinet from the side",
        "slide the plate sideways into the cabinet",
    ],
    "plate-slide-v3": [
        "slide the plate into the cabinet",
        "push the plate into the cabinet",
        "put the plate in the cabinet",
        "slide the plate forward into the cabinet",
    ],
    "push-back-v3": [
        "pull the puck back to the target",
        "drag the puck back toward the goal",
        "bring the puck back to the target",
        "slide the puck backward to the goal",
    ],
    "push-v3": [
        "push the puck to the target",
        "slide the puck to the goal",
        "push the puck along the table to the target",
        "nudge the puck over to the goal",
    ],
    "push-wall-v3": [
        "push the puck around the wall to the target",
        "slide the puck past the wall to the goal",
        "push the puck to the target behind the wall",
        "get the puck around the wall and onto the goal",
    ],
    "reach-v3": [
        "reach the target",
        "move the gripper to the goal",
        "touch the target with the gripper",
        "bring the hand to the goal position",
    ],
    "reach-wall-v3": [
        "reach the target behind the wall",
        "move the gripper over the wall to the goal",
        "get the hand past the wall to the target",
        "reach over the wall to the goal",
    ],
    "shelf-place-v3": [
        "put the block on the shelf",
        "pick up the cube and place it on the shelf",
        "set the block onto the shelf",
        "lift the cube onto the shelf",
    ],
    "soccer-v3": [
        "kick the ball into the goal",
        "push the soccer ball into the net",
        "score a goal with the ball",
        "knock the ball into the goal",
    ],
    "stick-pull-v3": [
        "use the stick to pull the thermos",
        "pick up the stick and drag the thermos with it",
        "hook the thermos with the stick and pull it to the target",
        "grab the stick and pull the flask along with it",
    ],
    "stick-push-v3": [
        "use the stick to push the thermos",
        "pick up the stick and push the thermos with it",
        "shove the thermos to the target with the stick",
        "grab the stick and push the flask along with it",
    ],
    "sweep-into-v3": [
        "sweep the puck into the hole",
        "push the puck into the hole in the table",
        "slide the puck into the hole",
        "brush the puck into the hole",
    ],
    "sweep-v3": [
        "sweep the puck off the table",
        "push the puck off the edge of the table",
        "slide the puck off the table",
        "brush the puck over the edge",
    ],
    "window-close-v3": [
        "close the window",
        "slide the window shut",
        "push the window closed",
        "slide the window closed by its handle",
    ],
    "window-open-v3": [
        "open the window",
        "slide the window open",
        "push the window open",
        "slide the window open by its handle",
    ],
}


def instructions_for(task: str) -> list[str]:
    """The instruction set of a v3 task name (e.g. ``"drawer-open-v3"``)."""
    try:
        return list(INSTRUCTIONS[task])
    except KeyError:
        raise UserError(
            f"no instructions for Meta-World task {task!r}; known tasks: {', '.join(INSTRUCTIONS)}"
        ) from None


def instruction_for(task: str, seed: int) -> str:
    """The instruction of the episode of ``task`` with env seed ``seed``: a deterministic draw from its set."""
    texts = instructions_for(task)
    rng = np.random.default_rng([int(seed), zlib.crc32(task.encode())])
    return texts[int(rng.integers(len(texts)))]
