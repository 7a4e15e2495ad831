/* A negotiator (deploy/negotiator.py, negotiator_leases.py): one agent's reconciler, woken by
 * watch events. It keeps no state of its own: woken, it reads its GPULeases, Offers and pods and
 * the market's view in one step, decides one thing, and does it with one API call in a later
 * step (by when its read may be stale). Deleting a host pod of a lease that is no longer its
 * active one cannot go stale (the delete names the pod's lease) and is done in the deciding
 * step. While its agent is partitioned from the host apiserver it can neither read nor write. A
 * crash loses nothing but the call in flight, which a later step redoes: the interleavings
 * already cover it. Job j is agent j's. */

#define N_NOP 0
#define N_MKPOD 1
#define N_RENEW 2
#define N_BID 3
#define N_APPLY 4   /* a release "finished" applied: the job's pods in the agent's plane Succeeded */
#define N_ACK 5     /* the releases applied, listed in the Negotiator status (a mask of leases) */

/* whether the negotiator bids when no bid of its job is waiting: always (it reads its Offers
 * back), or, broken, only if it never sent one before (it trusts its own memory) */
#ifdef BUG_NEGOTIATOR_SENDS_ONCE
#define SEND_AGAIN (!sent)
#else
#define SEND_AGAIN (1)
#endif

inline ndecide() {
  nop = N_NOP; x = 0; y = 0; mine = NONE; ending = 0; finished = O_rej[j] || A_done[j];
  for (L : 0 .. NL - 1) {
    if
    :: O_ex[L] && O_job[L] == j && O_rel[L] && O_why[L] == W_FINISHED && !A_done[j] ->
      nop = N_APPLY   /* apply it first: the GPULease may be collected once acknowledged */
    :: O_ex[L] && O_job[L] == j && O_rel[L] && !O_ack[L] &&
       (O_why[L] != W_FINISHED || A_done[j]) ->
      acks = acks | (1 << L)   /* applied, not yet listed */
    :: O_ex[L] && O_job[L] == j && !O_rel[L] && !O_end[L] -> mine = L
    :: O_ex[L] && O_job[L] == j && !O_rel[L] && O_end[L] -> ending = 1
    :: else -> skip
    fi
  }
  /* a host pod of a lease that is not (or no longer) the job's active one is deleted */
  for (p : 0 .. NP - 1) {
    if
    :: !finished && nop == N_NOP && PJOB(p) == j && P_st[p] != P_NONE && P_l[p] != mine ->
      printf("@ negotiator %d: delete pod %d of lease %d\n", j, p, P_l[p]);
      P_st[p] = P_NONE; P_big[p] = 0; nev[j] = 1; pod_written(p);
      finished = 2   /* one call per step */
    :: else -> skip
    fi
  }
  if
  :: nop == N_APPLY || finished == 2 -> skip
  :: nop == N_NOP && finished != 2 && acks != 0 -> nop = N_ACK; x = acks
  :: nop == N_NOP && acks == 0 && !finished && mine != NONE ->
    /* sync the lease's pods to the host, unbound, for the market to bind */
    for (p : 0 .. NP - 1) {
      if
      :: nop == N_NOP && PJOB(p) == j && P_st[p] == P_NONE -> nop = N_MKPOD; x = p; y = mine
      :: else -> skip
      fi
    };
    /* the view says the lease's next term is due: renew it */
    if
    :: nop == N_NOP && HELD(mine) && !S_lren[mine] && O_ren[j] != REN(mine, S_tick) ->
      nop = N_RENEW; x = REN(mine, S_tick)
    :: else -> skip
    fi
  :: nop == N_NOP && acks == 0 && !finished && mine == NONE && !ending && !O_bid[j] &&
     SEND_AGAIN ->
    /* its id: the view's sub-step, past every bid the market took (a resend, the same id) */
    nop = N_BID; x = S_bidseen[j] + 1
  :: else -> skip
  fi;
  acks = 0; L = 0; p = 0; mine = 0; ending = 0;
  if
  :: finished == 2 -> finished = 0
  :: else -> skip
  fi
}

inline lost() {   /* the request may be lost on the way (the budget bounds how often) */
  if
  :: b_loss > 0 -> b_loss--; printf("@ fault: request of negotiator %d lost\n", j)
  :: true -> delivered = 1
  fi
}

inline nact() {
  atomic {
    if
    :: nop == N_APPLY ->   /* a write to the agent's own plane: a host partition spares it */
      printf("@ negotiator %d: job finished, its pods marked Succeeded\n", j);
      finished_after_work = g_worked[j];   /* it was told "finished": had it run? */
      assert(finished_after_work);
      A_done[j] = 1; nev[j] = 1
    :: nop != N_APPLY && part[j] -> nev[j] = 1   /* partitioned: retried once reconnected */
    :: else ->
      if
      :: nop == N_MKPOD ->
        if
        :: P_st[x] == P_NONE ->
          /* a hostile negotiator may ask for more than the lease grants; the lease-fit
           * admission policy refuses it, unless the apiserver's lease cache is stale */
          if
          :: b_hostile > 0 -> b_hostile--;
            if
            :: printf("@ negotiator %d: too big a pod %d refused by lease-fit\n", j, x);
               nev[j] = 1
            :: printf("@ negotiator %d: too big a pod %d for lease %d (stale cache)\n", j, x, y);
               P_st[x] = P_WAITING; P_l[x] = y; P_gpu[x] = SLOTGPU(O_gpu[y], PSLOT(x));
               P_big[x] = 1; nev[j] = 1; pod_written(x)
            fi
          :: true ->
            printf("@ negotiator %d: create waiting pod %d for lease %d\n", j, x, y);
            P_st[x] = P_WAITING; P_l[x] = y; P_gpu[x] = SLOTGPU(O_gpu[y], PSLOT(x));
            sent_pod[x] = y + 1;
            nev[j] = 1; pod_written(x)
          fi
        :: else -> skip   /* 409: it exists */
        fi
      :: nop == N_RENEW ->
        lost();
        if
        :: delivered ->
          printf("@ negotiator %d: renew lease %d\n", j, REN_LEASE(x));
          O_ren[j] = x; sent_ren[j] = x; written()
        :: else -> nev[j] = 1   /* no answer: retried */
        fi
      :: nop == N_ACK ->
        lost();
        if
        :: delivered ->
          for (L : 0 .. NL - 1) {
            if
            :: x & (1 << L) -> O_ack[L] = 1; printf("@ negotiator %d: applied lease %d\n", j, L)
            :: else -> skip
            fi
          };
          L = 0; written()
        :: else -> skip
        fi;
        nev[j] = 1   /* its own Negotiator object changed (or the write is retried) */
      :: nop == N_BID ->
        lost();
        if
        :: delivered ->
          printf("@ negotiator %d: bid %d\n", j, x); O_bid[j] = x; sent_bid[j] = x; written()
        :: else -> nev[j] = 1
        fi;
#ifdef BUG_NEGOTIATOR_SENDS_ONCE
        sent = 1
#else
        skip
#endif
      fi
    fi;
    delivered = 0; nop = 0; x = 0; y = 0
  }
}

proctype Negotiator(byte j) {
  byte nop, x, y, mine, p, L, finished, acks;
  bit ending;
  bit delivered;
#ifdef BUG_NEGOTIATOR_SENDS_ONCE
  bit sent;
#endif
  do
  :: atomic { nev[j] && !part[j] -> nev[j] = 0; ndecide() }   /* a watch event: one decision */
     if
     :: finished && nop == N_NOP -> break   /* done, and every release it applied listed */
     :: !finished && nop == N_NOP -> skip
     :: nop != N_NOP -> nact()
     fi
  :: cut[j] -> goto gone
  od;
  if
  :: O_rej[j] -> printf("@ negotiator %d: job refused, done\n", j)
  :: else ->
    printf("@ negotiator %d: job finished, done\n", j)
  fi;
  g_done[j] = 1;   /* it saw its job finish, or refused */
gone:
  skip
}
