%% The BEAM side of the scaling benchmark (benchmarks/scaling.py).
%%
%% The same five workloads as benchmarks/peers/otpvm_scaling.py, one for one.
%% scaling.py compiles this module into a temporary folder and runs each
%% measurement in a fresh node:
%%
%%     erl +S N -noshell -pa DIR -run scaling main WORKLOAD ARG...
%%
%% which prints the figures as one line of JSON and halts (status 1, with the
%% error on stderr, if the workload crashed).  As on the otpvm side, the clock
%% starts once every process is spawned and waiting.
-module(scaling).
-behaviour(gen_server).

-export([main/1]).
-export([init/1, handle_call/3, handle_cast/2]).

main([Workload | Args]) ->
    try
        Figures = run(list_to_atom(Workload), [list_to_integer(A) || A <- Args]),
        io:format("~s~n", [json(Figures)]),
        halt(0)
    catch
        Class:Reason:Stack ->
            io:format(standard_error, "~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    end.

run(pairs, [Pairs, RoundTrips]) -> pairs(Pairs, RoundTrips);
run(ring, [Procs, Tokens, Rounds]) -> ring(Procs, Tokens, Rounds);
run(skynet, [Size]) -> skynet(Size);
run(calls, [Servers, Clients, Calls]) -> calls(Servers, Clients, Calls);
run(cpu, [Workers, Iterations]) -> cpu(Workers, Iterations).

json(Figures) ->
    Items = [io_lib:format("\"~s\": ~p", [K, V]) || {K, V} <- maps:to_list(Figures)],
    ["{", lists:join(", ", Items), "}"].

seconds_since(T0) ->
    erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond) / 1.0e6.

%% Send go to every pid, wait for Count done messages; return the seconds taken.
start_all(Pids, Count) ->
    T0 = erlang:monotonic_time(),
    [Pid ! go || Pid <- Pids],
    wait_done(Count),
    seconds_since(T0).

wait_done(0) -> ok;
wait_done(N) -> receive done -> wait_done(N - 1) end.

%% ---------------------------------------------------------------------------
%% pairs

pairs(Pairs, RoundTrips) ->
    Main = self(),
    Pingers = [spawn(fun() -> pinger(Main, RoundTrips) end) || _ <- lists:seq(1, Pairs)],
    Seconds = start_all(Pingers, Pairs),
    #{seconds => Seconds, round_trips_per_s => Pairs * RoundTrips / Seconds}.

pinger(Main, RoundTrips) ->
    Pong = spawn(fun ponger/0),
    receive go -> ok end,
    ping(Pong, 0, RoundTrips),
    Pong ! stop,
    Main ! done.

ping(_Pong, N, N) -> ok;
ping(Pong, I, N) ->
    Pong ! {self(), I},
    receive I -> ping(Pong, I + 1, N) end.

ponger() ->
    receive
        {From, N} -> From ! N, ponger();
        stop -> ok
    end.

%% ---------------------------------------------------------------------------
%% ring

ring(Procs, Tokens, Rounds) ->
    Main = self(),
    Pids = list_to_tuple([spawn(fun() -> ring_node(Main) end) || _ <- lists:seq(1, Procs)]),
    [element(I, Pids) ! {next, element(I rem Procs + 1, Pids)} || I <- lists:seq(1, Procs)],
    Hops = Procs * Rounds,
    T0 = erlang:monotonic_time(),
    [element(K * Procs div Tokens + 1, Pids) ! Hops || K <- lists:seq(0, Tokens - 1)],
    wait_done(Tokens),
    Seconds = seconds_since(T0),
    [Pid ! stop || Pid <- tuple_to_list(Pids)],
    #{seconds => Seconds, messages_per_s => Tokens * Hops / Seconds}.

ring_node(Main) ->
    receive {next, Next} -> ring_loop(Main, Next) end.

ring_loop(Main, Next) ->
    receive
        stop -> ok;
        0 -> Main ! done, ring_loop(Main, Next);
        H -> Next ! H - 1, ring_loop(Main, Next)
    end.

%% ---------------------------------------------------------------------------
%% skynet

skynet(Size) ->
    Main = self(),
    T0 = erlang:monotonic_time(),
    spawn(fun() -> skynet(Main, 0, Size, 10) end),
    Sum = receive S -> S end,
    Seconds = seconds_since(T0),
    Sum = Size * (Size - 1) div 2,
    #{seconds => Seconds, sum => Sum}.

skynet(Parent, Num, 1, _Div) ->
    Parent ! Num;
skynet(Parent, Num, Size, Div) ->
    Me = self(),
    Sub = Size div Div,
    [spawn(fun() -> skynet(Me, Num + I * Sub, Sub, Div) end) || I <- lists:seq(0, Div - 1)],
    Parent ! sum_children(Div, 0).

sum_children(0, Acc) -> Acc;
sum_children(N, Acc) -> receive S -> sum_children(N - 1, Acc + S) end.

%% ---------------------------------------------------------------------------
%% calls: this module is also the echo gen_server

calls(Servers, Clients, Calls) ->
    Main = self(),
    Pids = list_to_tuple([begin {ok, P} = gen_server:start(?MODULE, [], []), P end
                          || _ <- lists:seq(1, Servers)]),
    ClientPids = [spawn(fun() -> client(Main, element(I rem Servers + 1, Pids), Calls) end)
                  || I <- lists:seq(0, Clients - 1)],
    Seconds = start_all(ClientPids, Clients),
    [gen_server:stop(P) || P <- tuple_to_list(Pids)],
    #{seconds => Seconds, calls_per_s => Clients * Calls / Seconds}.

client(Main, Server, Calls) ->
    receive go -> ok end,
    call_loop(Server, 0, Calls),
    Main ! done.

call_loop(_Server, N, N) -> ok;
call_loop(Server, I, N) ->
    I = gen_server:call(Server, I),
    call_loop(Server, I + 1, N).

init([]) -> {ok, nil}.
handle_call(Request, _From, State) -> {reply, Request, State}.
handle_cast(_Msg, State) -> {noreply, State}.

%% ---------------------------------------------------------------------------
%% cpu

cpu(Workers, Iterations) ->
    Main = self(),
    Pids = [spawn(fun() -> worker(Main, Iterations) end) || _ <- lists:seq(1, Workers)],
    T0 = erlang:monotonic_time(),
    [Pid ! go || Pid <- Pids],
    Results = [receive R -> R end || _ <- Pids],
    Seconds = seconds_since(T0),
    [Result] = lists:usort(Results),
    #{seconds => Seconds, result => Result}.

worker(Main, Iterations) ->
    receive go -> ok end,
    Main ! spin(Iterations, 0).

%% The same loop as peers.spin (benchmarks/peers/__init__.py): I from Iterations down to 1.
spin(0, Acc) -> Acc;
spin(I, Acc) -> spin(I - 1, (Acc + I * I) rem 1000003).
