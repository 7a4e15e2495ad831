/* The shared world: the host apiserver's objects, the fault budgets, the ghost variables the
 * properties read, and the safety properties (watched by monitor processes).
 *
 * Sizes: 2 GPUs (bit masks 1, 2, 3), 3 jobs (job j belongs to agent j): job 0 needs 1 GPU, job 1
 * a gang of 2 pods with 1 GPU each, job 2 needs 3 GPUs (more than the cluster: refused).
 * Host pod slots: p0 = job 0 pod 0, p1 = job 1 pod 0, p2 = job 1 pod 1.
 */

#define NG 2
#define NJ 3
#define NP 3
#define NL 4          /* lease ids a run may use (a grant beyond it is an assertion failure) */
#define NONE 255

#define DEMAND(j) ((j) == 0 -> 1 : ((j) == 1 -> 2 : 3))
#define PJOB(p) ((p) == 0 -> 0 : 1)
#define PSLOT(p) ((p) == 2 -> 1 : 0)
/* the GPU (a one-bit mask) of pod slot s of a lease on the GPUs in mask m */
#define SLOTGPU(m, s) ((s) == 1 -> 2 : (((m) & 1) -> 1 : 2))
/* a renewal Offer's identity: the lease and the term (parity) it pays for */
#define REN(L, t) (1 + 2 * (L) + (t))
#define REN_LEASE(v) (((v) - 1) / 2)
#define REN_TERM(v) (((v) - 1) % 2)

/* lease phases in the market's persisted state */
#define L_NONE 0
#define L_GRANTED 1
#define L_ADMITTED 2
#define L_ENDING 3
#define L_ENDED 4
#define L_COLLECTED 5 /* ended, and its GPULease object is (to be) deleted */
#define HELD(L) (S_lph[L] == L_GRANTED || S_lph[L] == L_ADMITTED)
#define OCCUPIES(L) (S_lph[L] == L_GRANTED || S_lph[L] == L_ADMITTED || S_lph[L] == L_ENDING)
#define OVER(L) (S_lph[L] == L_ENDED || S_lph[L] == L_COLLECTED)
/* why a lease ended */
#define W_FINISHED 1
#define W_EXPIRED 2
/* a job in the market's persisted state */
#define J_PENDING 0
#define J_LEASED 1
#define J_DONE 2
#define J_REFUSED 3
/* a host pod */
#define P_NONE 0
#define P_WAITING 1   /* created, unbound: waits for the market to bind it */
#define P_RUN 2
#define P_DONE 3

/* ---- the market's state object (one object; every write is guarded by its resourceVersion:
 * dirty[r] == 1 means it changed since replica r last read it). In the code it is a journal of
 * sub-steps (deploy/market_state.py) whose replay gives these fields. */
byte S_next;              /* the lease-id counter */
byte S_job[NJ];
byte S_bidseen[NJ];       /* the id of the last bid of each job the market took */
byte S_lph[NL];
byte S_ljob[NL];
byte S_lgpu[NL];
bit S_lren[NL];           /* renewed (paid) for the current term */
byte S_lwhy[NL];
bit S_tick;               /* the last term end the market processed */
bit dirty[2];

/* ---- GPULease objects (spec written at creation; the market writes their status) */
bit O_ex[NL];
byte O_job[NL];
byte O_gpu[NL];
bit O_end[NL];            /* status.ending: the lease is ending, its holder stops syncing pods */
bit O_rel[NL];            /* status.release: it has ended (its pods are gone) */
byte O_why[NL];
bit O_ack[NL];            /* listed in its holder's Negotiator status (`appliedReleases`): the
                           * holder has applied the release, so the market may delete the lease */

/* ---- Offer objects: a bid and a renewal per job, and the market's Reject */
byte O_bid[NJ];            /* the id of the job's waiting bid, or 0 */
byte O_ren[NJ];            /* REN(lease, term): the renewal of a lease for a term, or 0 */
bit O_rej[NJ];

/* ---- each agent's own control plane: the job's pods there marked Succeeded (the holder applied
 * a release "finished"; it outlives the GPULease that said so) */
bit A_done[NJ];

/* ---- host pods (pchg[r * NP + p] == 1: pod p changed since replica r last read it) */
byte P_st[NP];
byte P_l[NP];
byte P_gpu[NP];
bit P_big[NP];            /* asks for more than one GPU: more than any lease grants a pod */
bit pchg[2 * NP];

/* ---- leader election (the coordination Lease object) and watch events */
byte ldr = NONE;
bit mev;                  /* an event for the leading market replica */
bit nev[NJ];              /* an event for each negotiator */

/* ---- the world: time, partitions, crash requests */
bit clock;                /* toggles at each term end */
bit part[NJ];
bit cut[NJ];              /* partitioned for good: the agent is gone */
bit crash[2];

/* ---- fault budgets: how many faults of each kind a run may suffer (spin -DCRASHES=2 ...; none
 * by default) */
#ifndef CRASHES
#define CRASHES 0      /* a market replica killed (it restarts) */
#endif
#ifndef LAPSES
#define LAPSES 0       /* the leader's election lease lapses while it works */
#endif
#ifndef PARTITIONS
#define PARTITIONS 0   /* an agent partitioned from the host apiserver, until it heals */
#endif
#ifndef CUTS
#define CUTS 0         /* an agent cut off for good */
#endif
#ifndef DUPLICATES
#define DUPLICATES 0   /* a bid, renewal or pod creation delivered again after it was used */
#endif
#ifndef LOSSES
#define LOSSES 0       /* a negotiator's request lost on the way */
#endif
#ifndef HOSTILE
#define HOSTILE 0      /* a negotiator's pod asking for more than its lease grants */
#endif
byte b_crash = CRASHES;
byte b_lapse = LAPSES;
byte b_part = PARTITIONS;
byte b_cut = CUTS;
byte b_dup = DUPLICATES;
byte b_loss = LOSSES;
byte b_hostile = HOSTILE;

/* ---- ghosts: what the properties talk about */
bit g_leased[NJ];         /* a GPULease for the job has been active */
bit g_worked[NJ];         /* the job's pods have done its work */
#ifndef WORK0
#define WORK0 2           /* terms of work job 0 needs (job 1 needs one) */
#endif
byte progress0;           /* terms job 0 has run (it keeps its progress across leases) */
bit g_done[NJ];           /* its negotiator saw its lease end "finished", or its job refused */
byte sent_bid[NJ];        /* what was sent, so the network can deliver it again */
byte sent_ren[NJ];
byte sent_pod[NP];        /* lease + 1 of the last pod created in each slot */

/* ---- the safety properties. Each is watched by a monitor process that can move only when its
 * property is false (so it costs no states): the violation is reported under the property's
 * name. */
#define ACTIVE(L) (O_ex[L] && !O_rel[L])
#define OBJ_OVERLAP(a, b) (ACTIVE(a) && ACTIVE(b) && (O_gpu[a] & O_gpu[b]) != 0)
#define LEDGER_OVERLAP(a, b) (OCCUPIES(a) && OCCUPIES(b) && (S_lgpu[a] & S_lgpu[b]) != 0)
#define SHARED_GPU(p, q) (P_st[p] == P_RUN && P_st[q] == P_RUN && P_gpu[p] == P_gpu[q])
#define SAME_JOB(a, b) (ACTIVE(a) && ACTIVE(b) && O_job[a] == O_job[b])
#define OUTSIDE(p) (P_st[p] == P_RUN && !(P_l[p] < NL && ACTIVE(P_l[p]) && \
  O_job[P_l[p]] == PJOB(p) && P_gpu[p] == SLOTGPU(O_gpu[P_l[p]], PSLOT(p)) && !P_big[p]))

/* no GPU is in two active GPULease objects, in two leases of the market's ledger, or under two
 * running pods */
#define GPU_LEASED_ONCE (!(OBJ_OVERLAP(0, 1) || OBJ_OVERLAP(0, 2) || OBJ_OVERLAP(0, 3) || \
  OBJ_OVERLAP(1, 2) || OBJ_OVERLAP(1, 3) || OBJ_OVERLAP(2, 3) || \
  LEDGER_OVERLAP(0, 1) || LEDGER_OVERLAP(0, 2) || LEDGER_OVERLAP(0, 3) || \
  LEDGER_OVERLAP(1, 2) || LEDGER_OVERLAP(1, 3) || LEDGER_OVERLAP(2, 3) || \
  SHARED_GPU(0, 1) || SHARED_GPU(0, 2) || SHARED_GPU(1, 2)))
/* a running pod runs under an active (unreleased) lease of its job, on its slot's GPU, and asks
 * for no more than the lease grants */
#define POD_INSIDE_LEASE (!(OUTSIDE(0) || OUTSIDE(1) || OUTSIDE(2)))
/* no job holds two active leases (and, checked where a lease is created, none is leased after its
 * work is done) */
#define JOB_LEASED_ONCE (!(SAME_JOB(0, 1) || SAME_JOB(0, 2) || SAME_JOB(0, 3) || \
  SAME_JOB(1, 2) || SAME_JOB(1, 3) || SAME_JOB(2, 3)))

bit gpu_leased_once = 1;
bit pod_inside_lease = 1;
bit job_leased_once = 1;
bit finished_after_work = 1;   /* checked where a negotiator is told its job finished */
bit no_eviction_under_lease = 1;   /* checked where the market deletes a pod */
bit lease_ends_once = 1;   /* checked where the market ends a lease: its GPULease exists */

active proctype monitor_gpu_leased_once() {
end_watching:
  atomic { !GPU_LEASED_ONCE -> gpu_leased_once = 0; assert(gpu_leased_once) }
}

active proctype monitor_pod_inside_lease() {
end_watching:
  atomic { !POD_INSIDE_LEASE -> pod_inside_lease = 0; assert(pod_inside_lease) }
}

active proctype monitor_job_leased_once() {
end_watching:
  atomic { !JOB_LEASED_ONCE -> job_leased_once = 0; assert(job_leased_once) }
}

/* Every write to the host apiserver wakes the market's watches; a write to anything an agent's
 * negotiator reads (its GPULeases, Offers and Reject, whether its pods exist, its view: the phase,
 * payment and term of its lease) also wakes that negotiator (the caller sets `nev[a] = 1`). */
inline written() {
  mev = 1
}

inline state_written() {
  dirty[0] = 1; dirty[1] = 1;
  written()
}

/* a pod created or deleted: its agent's watch sees it (a pod bound or a pod succeeding
 * changes nothing the negotiator acts on) */
inline pod_written(p) {
  pchg[p] = 1; pchg[NP + p] = 1;
  written()
}
