/* The gpuparley in-cluster market protocol, for the spin model checker.
 *
 * deploy/protocol/README.md says which code each process and step stands for, the fault model,
 * the properties and how to run it (`gpuparley protocol check`). Configuration, by -D flags:
 * JOBS (1-3) and the fault budgets in market/state.pml; a broken variant with one of
 * BUG_NO_RV_PRECONDITION, BUG_NO_PERSISTED_COUNTER, BUG_BIND_BEFORE_LEASE, BUG_FREE_BEFORE_EVICT,
 * BUG_NO_FIT_CHECK, BUG_NO_DEDUP, BUG_NEGOTIATOR_SENDS_ONCE, BUG_COLLECT_UNAPPLIED,
 * BUG_UNFENCED_LEASE_WRITE. */

#ifndef JOBS
#define JOBS 3   /* 1: job 0 alone; 2: jobs 0 and 1; 3: all three */
#endif

#include "market/state.pml"
#include "market/controller.pml"
#include "market/negotiator.pml"
#include "market/environment.pml"

init {
  atomic {
    S_job[0] = J_PENDING; S_job[1] = J_PENDING; S_job[2] = J_PENDING;
    dirty[0] = 1; dirty[1] = 1;
    pchg[0] = 1; pchg[1] = 1; pchg[2] = 1; pchg[3] = 1; pchg[4] = 1; pchg[5] = 1;
    nev[0] = 1; nev[1] = 1; nev[2] = 1;
    run Market(0); run Market(1);
    /* a job left out of the run counts as refused */
    run Negotiator(0);
    if
    :: JOBS >= 2 -> run Negotiator(1)
    :: else -> S_job[1] = J_REFUSED; O_rej[1] = 1; g_done[1] = 1
    fi;
    if
    :: JOBS == 3 -> run Negotiator(2)
    :: else -> S_job[2] = J_REFUSED; O_rej[2] = 1; g_done[2] = 1
    fi
  }
}

/* Liveness. Every process is event-driven and every fault has a budget, so a run that goes on
 * forever without a job being served is either stuck in a state nobody can leave (a valid end
 * state, repeated) or a livelock: spin's acceptance-cycle search finds both, with no fairness
 * assumption (`-f` gives the same verdict, at several times the cost). The propositions are
 * monotone, so "eventually all" is "all eventually". An agent cut off for good is excused. */
#define served(j) (g_leased[j] || O_rej[j] || cut[j])
#define settled(j) (g_done[j] || cut[j])
/* a GPULease is gone: collected (its holder applied its release), or released to a holder cut
 * off for good (who never applies it, so it is kept) */
#define GONE(L) (!O_ex[L] || (O_rel[L] && cut[O_job[L]]))
/* nothing left behind: every GPULease released and collected, every pod deleted */
#define cleaned (GONE(0) && GONE(1) && GONE(2) && GONE(3) && \
  P_st[0] == P_NONE && P_st[1] == P_NONE && P_st[2] == P_NONE)
/* every job is eventually leased (its GPULease active) or refused */
ltl leased_or_refused { <> (served(0) && served(1) && served(2)) }
/* every job eventually finishes (its negotiator sees its lease end "finished") or is refused,
 * and the market leaves nothing behind */
ltl finished_or_refused { <> (settled(0) && settled(1) && settled(2) && cleaned) }
