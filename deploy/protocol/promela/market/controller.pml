/* A market controller replica (deploy/market_controller.py, market_state.py, market_intake.py,
 * market_leases.py, market_pods.py, lease_grant.py, leader.py; deploy/protocol/README.md maps
 * each operation to the code): a level-triggered reconciler woken by watch events. Woken, it reads the world in one
 * step -- its state object (remembering the resourceVersion), the Offers, GPULeases and pods --
 * and decides one operation:
 *   - an operation whose decision cannot go stale (deleting a pod of an ending lease, evicting a
 *     misfit, writing a release or a Reject, dropping a duplicate Offer, deleting a collected
 *     GPULease; each guarded by the object's identity) is done in that same step;
 *   - the others are done in later steps, while other processes run: every write to the state
 *     object is guarded by the resourceVersion read when deciding (409 Conflict: the operation
 *     is dropped and the replica decides again from a fresh read).
 * A replica acts only while it leads, but its lease on leadership may lapse between its decision
 * and its act (a stale leader finishes its operation). It may be killed at any step (the escape
 * at the bottom): it loses its memory and restarts from what the apiserver holds. */

#define OP_NOP 0
#define OP_CREATE 1     /* create the GPULease object of a granted lease */
#define OP_ADMIT 2      /* bind a lease's pods */
#define OP_FINISH 3     /* a lease whose pods all succeeded ends "finished" */
#define OP_FREE 4       /* an ended lease's GPUs are free again */
#define OP_RENEW 5      /* a renewal pays the lease's next term */
#define OP_TICK 6       /* a term ended: unpaid leases expire */
#define OP_REFUSE 7     /* a bid no capacity can ever serve */
#define OP_GRANT 8      /* a bid that fits the free GPUs */
#define OP_COLLECT 9    /* an ended lease its holder has applied is to be deleted */

/* the resourceVersion precondition of a write to the state object */
#ifdef BUG_NO_RV_PRECONDITION
#define PRECONDITION_HOLDS (1)
#else
#define PRECONDITION_HOLDS (dirty[me] == 0)
#endif

/* a bid the market takes: one it has not taken before, for a job that is pending (the replay
 * and duplicate checks) */
#ifdef BUG_NO_DEDUP
#define FRESH_BID(j) (S_job[j] != J_REFUSED)
#else
#define FRESH_BID(j) (O_bid[j] > S_bidseen[j] && S_job[j] == J_PENDING)
#endif

/* an ended lease the market may collect (delete): one its holder lists as applied (the market
 * keeps none of a holder's released leases here: `--keep-released 0`) */
#ifdef BUG_COLLECT_UNAPPLIED
#define COLLECTABLE(L) (1)
#else
#define COLLECTABLE(L) (O_ack[L])
#endif

/* a pod that lease L (held, in the state object) does not grant */
#ifdef BUG_NO_FIT_CHECK
#define MISFIT(p, L) (P_gpu[p] != SLOTGPU(S_lgpu[L], PSLOT(p)) || S_ljob[L] != PJOB(p))
#else
#define MISFIT(p, L) (P_big[p] || P_gpu[p] != SLOTGPU(S_lgpu[L], PSLOT(p)) || \
  S_ljob[L] != PJOB(p))
#endif

/* the end of a transaction: what the replica read is forgotten */
inline forget() {
  op = OP_NOP; x = 0; y = 0; z = 0; w = 0; k = 0; ok = 0;
  dirty[me] = 1; pchg[me * NP] = 1; pchg[me * NP + 1] = 1; pchg[me * NP + 2] = 1
}

/* the market deletes pod q: never a running pod of a lease that is neither ending nor released */
inline delete_pod(q) {
  no_eviction_under_lease = P_st[q] != P_RUN || !ACTIVE(P_l[q]) || O_end[P_l[q]];
  assert(no_eviction_under_lease);
  P_st[q] = P_NONE; P_big[q] = 0; nev[PJOB(q)] = 1; pod_written(q)
}

/* One read of the world, one decision (op, x, y, z); immediate operations are done here. */
inline decide() {
  op = OP_NOP; x = 0; y = 0; z = 0; w = 0; done = 0;
  dirty[me] = 0;
  busy = 0;
  for (L : 0 .. NL - 1) {
    if
    :: OCCUPIES(L) -> busy = busy | S_lgpu[L]
    :: else -> skip
    fi
  }
  /* 1. a granted lease whose GPULease object is missing (a crash after the grant) */
  for (L : 0 .. NL - 1) {
    if
    :: !done && op == OP_NOP && HELD(L) && !O_ex[L] ->
      op = OP_CREATE; x = L; y = S_ljob[L]; z = S_lgpu[L]
    :: else -> skip
    fi
  }
  /* 2. an ending lease: mark its object ending (its holder stops syncing pods), delete its pods
   *    (one deletecollection), then write its release, then free its GPUs */
  for (L : 0 .. NL - 1) {
    if
    :: !done && op == OP_NOP && S_lph[L] == L_ENDING ->
      lease_ends_once = O_ex[L];   /* not one collected already: it ended before */
      assert(lease_ends_once);
#ifdef BUG_FREE_BEFORE_EVICT
      /* broken: the GPUs are given back first, the lease's pods cleaned up after */
      op = OP_FREE; x = L; y = S_lwhy[L]; z = S_ljob[L]; done = 1;
#endif
      if
      :: !done && !O_end[L] ->
        printf("@ market %d: mark lease %d ending\n", me, L);
        O_end[L] = 1; nev[O_job[L]] = 1; written(); done = 1
      :: else -> skip
      fi;
      for (p : 0 .. NP - 1) {
        if
        :: !done && P_st[p] != P_NONE && P_l[p] == L ->
          printf("@ market %d: delete pod %d of ending lease %d\n", me, p, L);
          delete_pod(p); done = 1
        :: else -> skip
        fi
      }
      if
      :: !done && !O_rel[L] ->
        printf("@ market %d: release lease %d (reason %d)\n", me, L, S_lwhy[L]);
        O_rel[L] = 1; O_why[L] = S_lwhy[L]; nev[O_job[L]] = 1; written(); done = 1
      :: !done && O_rel[L] -> op = OP_FREE; x = L; y = S_lwhy[L]; z = S_ljob[L]
      :: else -> skip
      fi
    :: else -> skip
    fi
  }
#ifdef BUG_FREE_BEFORE_EVICT
  for (L : 0 .. NL - 1) {
    if
    :: !done && op == OP_NOP && S_lph[L] == L_ENDED && O_ex[L] && !O_rel[L] ->
      printf("@ market %d: release lease %d (reason %d)\n", me, L, S_lwhy[L]);
      O_end[L] = 1; O_rel[L] = 1; O_why[L] = S_lwhy[L]; nev[O_job[L]] = 1; written(); done = 1
    :: else -> skip
    fi
  }
#endif
  /* 2b. collection: an ended lease its holder has applied is recorded as collected with a
   *     guarded write first (OP_COLLECT); a collected lease's object is then deleted, which
   *     cannot go stale (a collected lease is never written again) */
  for (L : 0 .. NL - 1) {
    if
    :: !done && op == OP_NOP && S_lph[L] == L_COLLECTED && O_ex[L] ->
      printf("@ market %d: delete collected GPULease %d\n", me, L);
      O_ex[L] = 0; nev[O_job[L]] = 1; written(); done = 1
    :: !done && op == OP_NOP && S_lph[L] == L_ENDED && O_ex[L] && COLLECTABLE(L) ->
      op = OP_COLLECT; x = L
    :: else -> skip
    fi
  }
  /* 3. lease-fit, the market's authoritative check: evict a waiting pod its lease does not grant;
   *    and delete a pod left naming a lease that has ended (created from a stale view) */
  for (p : 0 .. NP - 1) {
    L = P_l[p];
    if
    :: !done && op == OP_NOP && P_st[p] == P_WAITING && HELD(L) && MISFIT(p, L) ->
      printf("@ market %d: evict pod %d, outside lease %d\n", me, p, L);
      delete_pod(p); done = 1
    :: !done && op == OP_NOP && P_st[p] != P_NONE && OVER(L) ->
      printf("@ market %d: delete pod %d of ended lease %d\n", me, p, L);
      delete_pod(p); done = 1
    :: else -> skip
    fi
  }
  /* 4. admission: a held lease whose object is out and whose every slot holds a pod of it
   *    (some still waiting, unbound): bind them, each guarded by the pod's resourceVersion */
  for (L : 0 .. NL - 1) {
    if
    :: !done && op == OP_NOP && HELD(L) && O_ex[L] && !O_rel[L] && !O_end[L] ->
      j = S_ljob[L];
      k = 1;   /* every slot holds a pod of this lease */
      z = 0;   /* some of them is still waiting */
      for (p : 0 .. NP - 1) {
        if
        :: PJOB(p) == j && (P_st[p] == P_NONE || P_l[p] != L) -> k = 0
        :: PJOB(p) == j && P_st[p] == P_WAITING && P_l[p] == L -> z = 1
        :: else -> skip
        fi
      }
      if
      :: k && z -> op = OP_ADMIT; x = L; y = j
      :: else -> skip
      fi;
      z = 0
    :: else -> skip
    fi
  }
  /* 5. a held lease whose pods have all succeeded ends "finished" */
  for (L : 0 .. NL - 1) {
    if
    :: !done && op == OP_NOP && HELD(L) ->
      j = S_ljob[L];
      k = 1;
      for (p : 0 .. NP - 1) {
        if
        :: PJOB(p) == j && !(P_st[p] == P_DONE && P_l[p] == L) -> k = 0
        :: else -> skip
        fi
      }
      if
      :: k -> op = OP_FINISH; x = L
      :: else -> skip
      fi
    :: else -> skip
    fi
  }
  /* 6. a refusal whose Reject was not written (a crash after the refusal) */
  for (j : 0 .. NJ - 1) {
    if
    :: !done && op == OP_NOP && S_job[j] == J_REFUSED && !O_rej[j] ->
      printf("@ market %d: reject job %d again\n", me, j);
      O_rej[j] = 1; nev[j] = 1; written(); done = 1
    :: else -> skip
    fi
  }
  /* 7. renewals: pay the term of a held lease; drop a stale or duplicate renewal */
  for (j : 0 .. NJ - 1) {
    if
    :: !done && op == OP_NOP && O_ren[j] != 0 ->
      L = REN_LEASE(O_ren[j]);
      if
      :: HELD(L) && S_ljob[L] == j && !S_lren[L] && REN_TERM(O_ren[j]) == S_tick ->
        op = OP_RENEW; x = j; y = L; z = O_ren[j]
      :: else ->
        printf("@ market %d: drop renewal of lease %d (stale or duplicate)\n", me, L);
        O_ren[j] = 0; nev[j] = 1; written(); done = 1
      fi
    :: else -> skip
    fi
  }
  /* 8. a term ended */
  if
  :: !done && op == OP_NOP && S_tick != clock -> op = OP_TICK; x = clock
  :: else -> skip
  fi;
  /* 9. bids, taken in any order (messages are reordered) */
  if
  :: !done && op == OP_NOP ->
    select (k : 0 .. NJ - 1);
    for (j : 0 .. NJ - 1) {
      p = (j + k) % NJ;
      if
      :: !done && op == OP_NOP && O_bid[p] != 0 ->
        if
        :: FRESH_BID(p) && DEMAND(p) > NG -> op = OP_REFUSE; x = p; y = O_bid[p]
        :: FRESH_BID(p) && DEMAND(p) <= NG ->
          /* the first free GPUs the demand needs, if there are enough */
          z = 0; w = 0;
          for (L : 0 .. NG - 1) {
            if
            :: w < DEMAND(p) && (busy & (1 << L)) == 0 -> z = z | (1 << L); w++
            :: else -> skip
            fi
          }
          if
          :: w == DEMAND(p) -> op = OP_GRANT; x = p; y = O_bid[p]
          :: else -> z = 0   /* no room: the bid waits */
          fi;
          w = 0
        :: else ->   /* a duplicate, or late */
          printf("@ market %d: drop bid %d of job %d (replayed, or the job is not pending)\n",
                 me, O_bid[p], p);
          O_bid[p] = 0; nev[p] = 1; written(); done = 1
        fi
      :: else -> skip
      fi
    }
  :: else -> skip
  fi;
  busy = 0; j = 0; k = 0; p = 0; L = 0;
  if
  :: op == OP_NOP -> forget()
  :: else -> skip
  fi;
  done = 0
}

/* create the GPULease object x (job y, GPUs z); an existing one is a 409 */
inline create_lease() {
  if
  :: !O_ex[x] ->
    printf("@ market %d: create GPULease %d (job %d, GPUs %d)\n", me, x, y, z);
    O_ex[x] = 1; O_job[x] = y; O_gpu[x] = z; O_end[x] = 0; O_rel[x] = 0;
    job_leased_once = !g_worked[y];   /* never lease a job that has done its work */
    assert(job_leased_once);
    g_leased[y] = 1;
    nev[y] = 1; written()
  :: else ->
#ifdef BUG_NO_PERSISTED_COUNTER
    /* what the old controller did on a 409: patch the spec of whatever holds the name */
    printf("@ market %d: GPULease %d exists: patch it to job %d, GPUs %d\n", me, x, y, z);
    nev[O_job[x]] = 1;
    O_job[x] = y; O_gpu[x] = z;
    nev[y] = 1; written()
#else
    assert(O_job[x] == y && O_gpu[x] == z)   /* the same grant, written before */
#endif
  fi
}

/* create GPULease x behind the fence: only if the state object has not moved since this replica
 * last read or wrote it (a deposed replica, whose decision the new leader may have gone past,
 * writes nothing). Needed once leases are collected: a create that lands after the new leader
 * deleted the same lease would lease again a job that finished. The code's fence is a read just
 * before the write (`MarketState.confirm`); the model makes the two one step, the round trip
 * between them is a gap the README names. */
inline fenced_create_lease() {
#ifdef BUG_UNFENCED_LEASE_WRITE
  create_lease()
#else
  if
  :: dirty[me] == 0 -> create_lease()
  :: else -> printf("@ market %d: the state moved: GPULease %d not written\n", me, x)
  fi
#endif
}

/* bind pod q, guarded by the resourceVersion read when deciding */
inline bind(q) {
  if
  :: ok && pchg[me * NP + q] == 0 && P_st[q] == P_WAITING ->
    printf("@ market %d: bind pod %d (lease %d)\n", me, q, P_l[q]);
    P_st[q] = P_RUN; pod_written(q)
  :: else -> skip
  fi
}

/* a write to the state object, guarded by the resourceVersion of the decision */
#define GUARDED(write) \
  ok = PRECONDITION_HOLDS; \
  if \
  :: ok -> write; state_written() \
  :: else -> printf("@ market %d: 409 Conflict on the state object\n", me) \
  fi

inline act() {
  if
  :: op == OP_CREATE -> atomic { fenced_create_lease(); forget() }
  :: op == OP_FREE ->
    atomic {
      printf("@ market %d: free the GPUs of lease %d\n", me, x);
      GUARDED(S_lph[x] = L_ENDED; S_job[z] = (y == W_FINISHED -> J_DONE : J_PENDING));
      forget()
    }
  :: op == OP_COLLECT ->
    atomic {
      printf("@ market %d: collect lease %d\n", me, x);
      GUARDED(S_lph[x] = L_COLLECTED);
      forget()
    }
  :: op == OP_ADMIT ->
    /* the pods, read again (the pod cache is not the state object's): every slot holds a waiting
     * or running pod of this lease that fits it; their resourceVersions are remembered */
    atomic {
      k = 1;
      for (p : 0 .. NP - 1) {
        if
        :: PJOB(p) == y && !((P_st[p] == P_WAITING || P_st[p] == P_RUN) && P_l[p] == x &&
                             !MISFIT(p, x)) -> k = 0
        :: PJOB(p) == y -> pchg[me * NP + p] = 0
        :: else -> skip
        fi
      }
      p = 0;
      if
      :: !k -> forget()
      :: else -> skip
      fi;
      k = 0
    };
#ifndef BUG_BIND_BEFORE_LEASE
    /* the pods are bound only after a guarded write shows the lease still held as it was
     * read (if it is already admitted, a no-op update only checks the precondition) */
    if
    :: op != OP_NOP ->
      atomic {
        ok = PRECONDITION_HOLDS;
        printf("@ market %d: admit the pods of lease %d (precondition %d)\n", me, x, ok);
        if
        :: ok && S_lph[x] == L_GRANTED -> S_lph[x] = L_ADMITTED; state_written()
        :: ok && S_lph[x] != L_GRANTED -> skip
        :: !ok -> forget()
        fi
      }
    :: else -> skip
    fi;
#else
    /* broken: the pods are bound on the lease as first read */
    ok = 1;
#endif
    if
    :: op == OP_NOP -> skip
    :: op != OP_NOP && y == 0 -> atomic { bind(0); forget() }
    :: op != OP_NOP && y != 0 -> atomic { bind(1) }; atomic { bind(2); forget() }
    fi
  :: op == OP_FINISH ->
    atomic {
      printf("@ market %d: lease %d finished\n", me, x);
      GUARDED(S_lph[x] = L_ENDING; S_lwhy[x] = W_FINISHED; nev[S_ljob[x]] = 1);
      forget()
    }
  :: op == OP_RENEW ->
    atomic {
      printf("@ market %d: lease %d renewed\n", me, y);
      GUARDED(S_lren[y] = 1; nev[x] = 1);
      if
      :: !ok -> forget()
      :: else -> skip
      fi
    };
    if
    :: op != OP_NOP ->
      atomic {
        if
        :: O_ren[x] == z -> O_ren[x] = 0; nev[x] = 1; written()   /* this renewal, by name */
        :: else -> skip
        fi;
        forget()
      }
    :: else -> skip
    fi
  :: op == OP_TICK ->
    atomic {
      ok = PRECONDITION_HOLDS;
      printf("@ market %d: term end\n", me);
      if
      :: ok ->
        S_tick = x;
        for (L : 0 .. NL - 1) {
          if
          :: HELD(L) && S_lren[L] -> S_lren[L] = 0; nev[S_ljob[L]] = 1
          :: HELD(L) && !S_lren[L] ->
            printf("@ market %d: lease %d expires (unpaid)\n", me, L);
            S_lph[L] = L_ENDING; S_lwhy[L] = W_EXPIRED; nev[S_ljob[L]] = 1
          :: else -> skip
          fi
        }
        L = 0;
        state_written()
      :: else -> skip
      fi;
      forget()
    }
  :: op == OP_REFUSE ->
    atomic {
      printf("@ market %d: refuse job %d\n", me, x);
      GUARDED(S_job[x] = J_REFUSED);
      if
      :: !ok -> forget()
      :: else -> skip
      fi
    };
    if
    :: op != OP_NOP ->
      atomic { O_rej[x] = 1; nev[x] = 1; written() };
      atomic {
        if
        :: O_bid[x] == y -> O_bid[x] = 0; nev[x] = 1; written()   /* this bid, by name */
        :: else -> skip
        fi;
        forget()
      }
    :: else -> skip
    fi
  :: op == OP_GRANT ->
    atomic {
      ok = PRECONDITION_HOLDS;
      if
      :: ok ->
#ifdef BUG_NO_PERSISTED_COUNTER
        w = next;   /* the counter lives in the replica's memory */
        next++;
#else
        w = S_next;
        S_next++;
#endif
        assert(w < NL);
        printf("@ market %d: grant lease %d to job %d (GPUs %d)\n", me, w, x, z);
        S_lph[w] = L_GRANTED; S_ljob[w] = x; S_lgpu[w] = z; S_lren[w] = 1; S_lwhy[w] = 0;
        S_job[x] = J_LEASED; S_bidseen[x] = y;
        state_written();
        dirty[me] = 0;   /* its own write: the replica knows the version it made */
        k = y; y = x; x = w; w = 0
      :: else -> forget()
      fi
    };
    if
    :: op != OP_NOP ->
      atomic { fenced_create_lease() };
      atomic {
        if
        :: O_bid[y] == k -> O_bid[y] = 0; nev[y] = 1; written()   /* the bid taken, by name */
        :: else -> skip
        fi;
        forget()
      }
    :: else -> skip
    fi
  fi
}

proctype Market(byte me) {
  byte op, x, y, z, w, busy, j, k, p, L;
  bit ok, done;
#ifdef BUG_NO_PERSISTED_COUNTER
  byte next;
#endif
end_restart:
  do
  :: {
end_idle:
       do
       :: atomic { ldr == NONE -> ldr = me; mev = 1; printf("@ market %d: leads\n", me) }
       :: atomic { ldr == me && mev -> mev = 0; decide() }   /* a watch event: one decision */
          if
          :: op == OP_NOP -> skip
          :: else -> act()   /* its own writes wake it for the next decision */
          fi
       od
     } unless {
       atomic {
         crash[me] ->   /* killed: memory lost; it restarts from what the apiserver holds */
         printf("@ market %d: killed and restarted\n", me);
         crash[me] = 0;
         forget();
         busy = 0; j = 0; k = 0; p = 0; L = 0; done = 0;
#ifdef BUG_NO_PERSISTED_COUNTER
         next = 0;
#endif
         if
         :: ldr == me -> mev = 1   /* a restarted leader reads the world afresh */
         :: else -> skip
         fi
       }
     }
  od
}
