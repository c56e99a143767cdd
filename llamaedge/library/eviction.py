"""What a load needs, and which idle members make room for it: the options a member loads
with, its estimate against the budget, and the least recently used idle members to unload
so that it fits the budget and `models_max`. Pure functions of the members' state, called
under the library's condition."""

from __future__ import annotations

from collections.abc import Iterable

from llamaedge.engine import LoadOptions
from llamaedge.library.errors import LoadFailed, ModelTooLarge, NoRoom
from llamaedge.library.loader import M
from llamaedge.library.memory import MemoryBudget, describe, estimate_need
from llamaedge.library.state import Member, embeds, projector_of
from llamaedge.library.types import NO_MEMORY, LibraryConfig, MemoryNeed, ModelFacts, Status
from llamaedge.projectors import projector_bytes


def load_options(config: LibraryConfig, budget: MemoryBudget, member: Member[M], facts: ModelFacts) -> LoadOptions:
    """The options every member loads with, the layers this one offloads, and its projector."""
    options = LoadOptions(ctx_size=config.ctx_size, threads=config.threads, parallel=config.parallel,
                          mmproj=projector_of(member))
    options.n_gpu_layers = budget.gpu_layers(facts, options, config.n_gpu_layers)
    return options


def need_of(member: Member[M], facts: ModelFacts, config: LibraryConfig, budget: MemoryBudget) -> MemoryNeed:
    """What `member` (whose header says `facts`) takes once loaded."""
    return _need(member, facts, load_options(config, budget, member, facts))


def _need(member: Member[M], facts: ModelFacts, options: LoadOptions) -> MemoryNeed:
    return estimate_need(facts, options, embedding=embeds(member), projector_bytes=projector_bytes(options.mmproj))


def estimate(member: Member[M], config: LibraryConfig, budget: MemoryBudget) -> tuple[LoadOptions, MemoryNeed]:
    """The options `member` loads with and what it needs; LoadFailed when its file cannot be
    read (its header is read already: `member.facts`), ModelTooLarge when it could never fit."""
    facts = member.facts
    if facts is None:
        raise LoadFailed(f"the model '{member.name}' cannot be loaded: {member.facts_error}", model=member.name)
    options = load_options(config, budget, member, facts)
    need = _need(member, facts, options)
    if not need.fits(budget.capacity):
        raise ModelTooLarge(
            f"the model '{member.name}' needs about {describe(need)}, and this server's models may take "
            f"{describe(budget.capacity)} in all", model=member.name,
            need_bytes=need.ram_bytes + need.vram_bytes,
            room_bytes=budget.capacity.ram_bytes + budget.capacity.vram_bytes)
    return options, need


def held(members: Iterable[Member[M]]) -> tuple[MemoryNeed, MemoryNeed]:
    """What the members loaded and loading take, and what the loading ones take alone."""
    taken, loading = NO_MEMORY, NO_MEMORY
    for m in members:
        if m.holds_memory:
            taken += m.need
            if m.status is Status.LOADING:
                loading += m.need
    return taken, loading


def plan_load(member: Member[M], need: MemoryNeed, members: list[Member[M]], budget: MemoryBudget,
              models_max: int) -> list[Member[M]] | None:
    """The idle members to unload so that `member` (needing `need`) fits, least recently used
    first, or None when there is no room even with every idle member gone."""
    taken, loading = held(members)
    room = budget.room(taken, loading)
    count = sum(1 for m in members if m.holds_memory and not m.closing)
    idle = sorted((m for m in members if m.idle and m is not member and m.unload_reason is None),
                  key=lambda m: m.last_used)
    victims: list[Member[M]] = []
    while (models_max > 0 and count >= models_max) or not need.fits(room):
        if not idle:
            return None
        victim = idle.pop(0)
        victims.append(victim)
        count -= 1
        room += victim.need
    return victims


def no_room(member: Member[M], members: Iterable[Member[M]]) -> NoRoom:
    busy = [m.name for m in members if m.holds_memory and not m.idle]
    return NoRoom(f"no room to load the model '{member.name}': the models loaded ({', '.join(busy) or 'none'}) "
                  "are in use", model=member.name, hint="try again shortly")
